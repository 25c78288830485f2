"""TLS verification is never off, proven on the wire (issue 13, item 8): every client path of the collection - the Talos
gRPC client behind each Talos module, and the Kubernetes client behind each Kubernetes module - refuses a server whose
certificate comes from a CA it was not told to trust, and changes nothing. tests/unit/test_tls_verification.py
checks the source; this checks the behaviour, against the simulator's real mutual TLS."""

import os

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._backends import (
    cluster_info, kubeconfig, kubernetes_restart, kubernetes_verify, machine_patch, verify)
from ansible_collections.talosops.pki.plugins.module_utils._errors import ServerNotTrustedError

from test_bad_input import make_rotation  # pylint: disable=import-error

NOT_TRUSTED = "the endpoint's certificate is not signed by any CA in the talosconfig's ca"


@pytest.fixture(name="cluster", scope="module")
def fixture_cluster(make_module_sim_cluster):
    return make_module_sim_cluster(controlplanes=1, workers=1)


@pytest.fixture(name="stranger_ca")
def fixture_stranger_ca(tmp_path):
    """The only CA the client is told to trust: not the one that issued the servers' certificates."""
    path = tmp_path / "stranger-ca.crt"
    path.write_bytes(_pki.generate_ca("talos").crt)
    return str(path)


def defaults(backend, **values):
    params = {name: spec.get("default") for name, spec in backend.ARGUMENT_SPEC.items()}
    params.update(values)
    return params


def talos_paths(cluster, stranger_ca, tmp_path):
    """(label, backend, params) for every module that speaks to apid."""
    auth = {"talosconfig": cluster.talosconfig_path, "server_ca": [stranger_ca], "retry_deadline": 1.0, "call_timeout": 5.0}
    node = cluster.workers[0].address
    rotation = str(tmp_path / "rotation" / "talos")
    make_rotation(rotation, "talos", cluster.secrets.os_ca.cert_pem.decode())
    return [
        ("talos_cluster_info", cluster_info, defaults(cluster_info, controlplanes=[cluster.controlplanes[0].address],
                                                      workers=[node], **auth)),
        ("talos_verify through the endpoint", verify, defaults(verify, nodes=[node], deadline=1.0, **auth)),
        ("talos_verify direct", verify, defaults(verify, nodes=[node], direct=True, deadline=1.0, **auth)),
        ("talos_machine_patch", machine_patch, defaults(machine_patch, node=node, phase="accept", rotation_dir=rotation,
                                                        machine_type="worker", **auth)),
        ("talos_kubeconfig", kubeconfig, defaults(kubeconfig, path=str(tmp_path / "kubeconfig"), merge=False, **auth)),
    ]


def test_every_talos_client_path_refuses_a_server_from_another_ca(cluster, stranger_ca, tmp_path):
    configs = {node.name: node.config_bytes() for node in cluster.nodes}
    for label, backend, params in talos_paths(cluster, stranger_ca, tmp_path):
        try:
            result = backend.run(params)
        except ServerNotTrustedError as error:
            message = str(error)
        else:
            assert result.get("failed"), "%s accepted a server certificate from a CA it does not trust: %s" % (label, result)
            message = result["msg"] + str(result)
        assert NOT_TRUSTED in message, "%s: %s" % (label, message)
    assert {node.name: node.config_bytes() for node in cluster.nodes} == configs
    assert not os.path.exists(tmp_path / "kubeconfig")
    # The control: the same client, trusting the CA that did issue the servers' certificates, gets through.
    trusted = verify.run(defaults(verify, talosconfig=cluster.talosconfig_path, nodes=[cluster.workers[0].address], deadline=5.0))
    assert not trusted.get("failed"), trusted


def test_every_kubernetes_client_path_refuses_a_server_from_another_ca(cluster, stranger_ca):
    kubeconfig_path = cluster.kubeconfig_path
    paths = [
        ("talos_kubernetes_verify", kubernetes_verify, defaults(kubernetes_verify, kubeconfig=kubeconfig_path, server_ca=[stranger_ca],
                                                                deadline=1.0, retry_interval=0.2, request_timeout=3.0)),
        ("talos_kubernetes_restart", kubernetes_restart, defaults(kubernetes_restart, kubeconfig=kubeconfig_path, server_ca=[stranger_ca],
                                                                  ca_fingerprint="a" * 64, request_timeout=3.0,
                                                                  workloads=[{"namespace": "kube-system", "kind": "daemonset",
                                                                              "name": "kube-proxy"}])),
    ]
    for label, backend, params in paths:
        result = backend.run(params)
        assert result.get("failed"), "%s accepted a server certificate from a CA it does not trust: %s" % (label, result)
        assert "CERTIFICATE_VERIFY_FAILED" in str(result) or "does not verify against the CA bundle" in str(result), (label, result)
        assert not any(report.get("changed") for report in result.get("workloads", [])), label
    trusted = kubernetes_verify.run(defaults(kubernetes_verify, kubeconfig=kubeconfig_path, deadline=5.0, retry_interval=0.2,
                                             request_timeout=3.0))
    assert not trusted.get("failed"), trusted
