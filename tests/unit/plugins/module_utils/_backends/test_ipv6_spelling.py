"""An IPv6 address matches whatever its spelling (issue 13, item 8): the inventory may say FD00:0::2, Talos and the
Kubernetes API fd00::2. A raw string comparison took that node for one the inventory leaves out."""

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._backends import cluster_info

MEMBERS = [
    {"id": "cp1", "hostname": "cp1", "addresses": ["fd00::2"], "machine_type": "controlplane"},
    {"id": "w1", "hostname": "w1", "addresses": ["fd00::5"], "machine_type": "worker"},
]


@pytest.mark.parametrize("controlplane, worker", [("FD00::2", "fd00:0:0::5"), ("fd00:0000::0002", "FD00:0::0:5")])
def test_members_match_the_inventory_in_any_ipv6_spelling(controlplane, worker):
    assert cluster_info._members_left_out(MEMBERS, {"controlplanes": [controlplane], "workers": [worker]}) == []


def test_a_member_left_out_is_still_found():
    (problem,) = cluster_info._members_left_out(MEMBERS, {"controlplanes": ["FD00::2"], "workers": ["fd00::6"]})
    assert "w1 (fd00::5, worker)" in problem


def test_kubernetes_nodes_match_the_inventory_in_any_ipv6_spelling(tmp_path):
    from ansible_collections.talosops.pki.plugins.module_utils._backends import kubernetes_verify  # pylint: disable=import-outside-toplevel
    from _fake_kube_api import FakeKubeAPI, node  # pylint: disable=import-error,import-outside-toplevel

    ca = _pki.generate_ca("kubernetes")
    with FakeKubeAPI(ca, [ca]) as api:
        api.nodes = [node("cp-1", "fd00::2"), node("worker-1", "fd00::5")]
        kubeconfig = api.kubeconfig(tmp_path / "kc", _pki.issue_client_certificate(ca, roles=["system:masters"]))
        values = {name: spec.get("default") for name, spec in kubernetes_verify.ARGUMENT_SPEC.items()}
        values.update(kubeconfig=str(kubeconfig), deadline=2.0, retry_interval=0.05, request_timeout=3.0,
                      nodes=["FD00:0::2", "fd00:0:0:0::5"], refuse_unlisted_nodes=True)
        result = kubernetes_verify.run(values)
    assert not result.get("failed"), result
    assert result["missing_nodes"] == []
