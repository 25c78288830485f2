"""talos_machine_patch's backend: what it refuses before contacting a node (masking is _redact's, see test_redact.py)."""

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _node_service, _rotation
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
    assert (_node_service.bundle(_rotation.NodeCAs(*before)) != _node_service.bundle(_rotation.NodeCAs(*after))) == restarts
