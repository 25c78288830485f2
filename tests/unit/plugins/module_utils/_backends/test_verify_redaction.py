"""talos_verify: a node's refusal text lands in the per-node results as well as in msg; both are redacted."""

import types

from ansible_collections.talosops.pki.plugins.module_utils._auth import AUTH_ARGUMENT_SPEC
from ansible_collections.talosops.pki.plugins.module_utils._backends import verify
from ansible_collections.talosops.pki.plugins.module_utils._errors import TalosAPIError

TOKEN = "q1w2e3.r4t5y6u7i8o9p0a1"


class RefusingClient:
    async def version(self, node=None):
        raise TalosAPIError("node %s: config rejected:\n    token: %s" % (node, TOKEN))

    async def close(self):
        pass


def test_a_node_error_quoting_its_config_is_masked_in_the_per_node_result(monkeypatch):
    monkeypatch.setattr(verify, "Target", lambda params, sealing=None: types.SimpleNamespace(client=lambda **_kwargs: RefusingClient()))
    params = {name: spec.get("default") for name, spec in verify.ARGUMENT_SPEC.items()}
    params.update({name: spec.get("default") for name, spec in AUTH_ARGUMENT_SPEC.items()})
    params.update(nodes=["10.5.0.2"], deadline=0.2, retry_interval=0.05)
    result = verify.run(params)
    assert result["failed"] and "token: <redacted>" in result["nodes"]["10.5.0.2"]["error"]
    assert TOKEN.split(".")[1] not in repr(result)
