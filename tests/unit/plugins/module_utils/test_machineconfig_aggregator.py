"""The aggregator (front-proxy) CA in a machine config: the v1.14+ KubeAggregatorCAConfig document, and the legacy
cluster.aggregatorCA field that has no accepted list (refused, never rewritten)."""

import os

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import (
    KIND_AGGREGATOR,
    KIND_KUBERNETES,
    KIND_TALOS,
    LOCATION_AGGREGATOR_CA_CONFIG,
    LOCATION_LEGACY_AGGREGATOR_CA,
    MachineConfig,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
REFERENCE_DIR = os.path.join(REPO_ROOT, "..", "shared", "talos-reference")


def reference(relative):
    with open(os.path.join(REFERENCE_DIR, relative), "rb") as handle:
        return handle.read()


def new_ca():
    ca = _pki.generate_ca(_pki.KIND_AGGREGATOR)
    return ca.crt, ca.key


def test_v115_control_plane_aggregator_rotates_through_every_phase_and_nothing_else_changes():
    original = reference("machineconfig-v1.15/base-controlplane.yaml")
    config = MachineConfig.parse(original)
    assert config.aggregator_ca_location == LOCATION_AGGREGATOR_CA_CONFIG
    old = config.get_ca(KIND_AGGREGATOR)
    assert old.issuing_crt and old.issuing_key and old.accepted == ()
    others = {kind: config.get_ca(kind) for kind in (KIND_TALOS, KIND_KUBERNETES)}
    new_crt, new_key = new_ca()

    assert config.set_ca(KIND_AGGREGATOR, old.issuing_crt, old.issuing_key, (new_crt,))  # accept
    assert MachineConfig.parse(config.to_bytes()).get_ca(KIND_AGGREGATOR).accepted == (new_crt,)
    assert config.set_ca(KIND_AGGREGATOR, new_crt, new_key, (old.issuing_crt,))  # swap
    assert config.set_ca(KIND_AGGREGATOR, new_crt, new_key, ())  # remove
    reread = MachineConfig.parse(config.to_bytes())
    assert reread.get_ca(KIND_AGGREGATOR) == (new_crt, new_key, ())
    assert "acceptedCAs" not in config.to_bytes().decode().split("kind: KubeAggregatorCAConfig")[1].split("\n---\n")[0]
    for kind, fields in others.items():
        assert reread.get_ca(kind) == fields

    # Every line outside the aggregator document is byte-identical.
    def outside(text):
        return [part for part in text.decode().split("\n---\n") if "KubeAggregatorCAConfig" not in part]
    assert outside(config.to_bytes()) == outside(original)


def test_v113_legacy_field_is_reported_and_refused_with_the_upgrade_hint():
    config = MachineConfig.parse(reference("machineconfig-v1.13/base-controlplane.yaml"), source="machine config of cp1")
    assert config.aggregator_ca_location == LOCATION_LEGACY_AGGREGATOR_CA
    with pytest.raises(ConfigError, match=r"machine config of cp1 has no KubeAggregatorCAConfig.*cluster\.aggregatorCA.*v1\.14"):
        config.get_ca(KIND_AGGREGATOR)
    new_crt, new_key = new_ca()
    with pytest.raises(ConfigError, match="Upgrade"):
        config.set_ca(KIND_AGGREGATOR, new_crt, new_key, ())


def test_workers_carry_no_aggregator_ca():
    assert MachineConfig.parse(reference("machineconfig-v1.15/base-worker.yaml")).aggregator_ca_location is None


def test_legacy_field_and_document_together_are_refused_as_talos_does():
    text = reference("machineconfig-v1.15/base-controlplane.yaml").decode()
    legacy = reference("machineconfig-v1.13/base-controlplane.yaml").decode()
    aggregator_lines = legacy[legacy.index("    aggregatorCA:"):legacy.index("    serviceAccount:")]
    text = text.replace("cluster:\n", "cluster:\n" + aggregator_lines, 1)
    with pytest.raises(ConfigError, match="aggregator CA twice"):
        MachineConfig.parse(text.encode())


def test_two_aggregator_documents_are_refused():
    text = reference("machineconfig-v1.15/base-controlplane.yaml").decode()
    document = text[text.index("apiVersion: v1alpha1\nkind: KubeAggregatorCAConfig"):]
    document = document.split("\n---\n")[0]
    with pytest.raises(ConfigError, match="2 KubeAggregatorCAConfig documents"):
        MachineConfig.parse((text.rstrip("\n") + "\n---\n" + document).encode())


@pytest.mark.parametrize("relative, expected", [
    ("machineconfig-v1.15/base-controlplane.yaml", "KubeServiceAccountConfig"),
    ("machineconfig-v1.13/base-controlplane.yaml", "cluster.serviceAccount"),
    ("machineconfig-v1.15/base-worker.yaml", None),
])
def test_service_account_location(relative, expected):
    assert MachineConfig.parse(reference(relative)).service_account_location == expected
