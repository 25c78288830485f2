"""talos_machine_patch's backend: what it refuses before contacting a node, and what it masks in a node's dry-run diff."""

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki, _rotation
from ansible_collections.talosops.pki.plugins.module_utils._auth import AUTH_ARGUMENT_SPEC
from ansible_collections.talosops.pki.plugins.module_utils._backends import machine_patch
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError


def params(**overrides):
    values = {name: spec.get("default") for name, spec in machine_patch.ARGUMENT_SPEC.items()}
    values.update({name: spec.get("default") for name, spec in AUTH_ARGUMENT_SPEC.items()})
    values.update(node="10.5.0.2", phase="accept", rotation_dir="/nonexistent")
    values.update(overrides)
    return values


def test_wait_kubelet_is_for_the_kubernetes_ca_only():
    with pytest.raises(ConfigError, match="wait_kubelet needs ca=kubernetes"):
        machine_patch.run(params(wait_kubelet=True, ca="talos"))


def test_kubelet_timeout_must_be_positive():
    with pytest.raises(ConfigError, match="kubelet_timeout must be a positive"):
        machine_patch.run(params(wait_kubelet=True, ca="kubernetes", kubelet_timeout=0))


@pytest.mark.parametrize("before,after,restarts", [
    (("old", ()), ("old", ("new",)), True),
    (("old", ("new",)), ("new", ("old",)), True),  # the order of the bundle changes: the kubelet restarts
    ((None, ("old", "new")), (None, ("new", "old")), True),
    ((None, ("new", "old")), ("old", ("new",)), False),  # same bundle, other fields
])
def test_bundle_is_accepted_then_issuing(before, after, restarts):
    assert (machine_patch._bundle(_rotation.NodeCAs(*before)) != machine_patch._bundle(_rotation.NodeCAs(*after))) == restarts


@pytest.fixture(name="key_pem", scope="module")
def fixture_key_pem():
    return _pki.generate_ca("kubernetes").key.decode()


def test_whole_key_blocks_and_key_values_are_masked(key_pem):
    text = "cluster:\n    ca:\n        crt: QUJD\n        key: TFMwdExTMUNSVWRKVGlCRlF5QlFVa2xXUVZSRklFdEZXUzB0TFMwdA==\n" + key_pem
    masked = machine_patch.redact_key_material(text)
    assert "key: <redacted>" in masked and "crt: QUJD" in masked
    assert "PRIVATE KEY" not in masked


def test_a_raw_pem_key_cut_by_a_diff_hunk_is_masked_to_its_last_line(key_pem):
    # A v1.14+ KubeAPIServerCAConfig holds the key as raw PEM; a hunk may start inside it.
    body = key_pem.strip().splitlines()[1:]
    hunk = "@@ -84,6 +84,19 @@\n" + "".join("         %s\n" % line for line in body[1:]) + "+acceptedCAs:\n+    - |\n"
    masked = machine_patch.redact_key_material(hunk)
    for line in body[1:-1]:
        assert line not in masked
    assert "-----END EC PRIVATE KEY-----" in masked and "+acceptedCAs:" in masked
    assert masked.count("<redacted>") == len(body) - 2


def test_short_last_key_line_alone_before_the_end_marker(key_pem):
    last = key_pem.strip().splitlines()[-2]
    masked = machine_patch.redact_key_material(" %s\n -----END EC PRIVATE KEY-----\n kind: KubeAPIServerCAConfig\n" % last)
    assert last not in masked and "kind: KubeAPIServerCAConfig" in masked
