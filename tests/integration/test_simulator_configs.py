"""Generated machine configs have the real shapes per Talos version (TALOS-FACTS §6)."""


import pytest
import yaml
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from talos_sim import machineconfig, pki
from talos_reference import reference_path  # pylint: disable=import-error
from talos_sim.testing import accept_kubernetes_ca, admin_credentials, apply_request, call, edit_config, load_documents

APPLY = "/machine.MachineService/ApplyConfiguration"
VERSION = "/machine.MachineService/Version"
KIND = machineconfig.KUBE_CA_KIND


def v1alpha1(data):
    return next(document for document in load_documents(data) if "kind" not in document)


def kinds(data):
    return [document.get("kind") for document in load_documents(data) if "kind" in document]


def kube_ca_document(data):
    return next(document for document in load_documents(data) if document.get("kind") == KIND)


def apply(cluster, node, data, **kwargs):
    return call(admin_credentials(cluster), node.address, APPLY, apply_request(data, **kwargs)).messages[0]


def reference(version, machine_type):
    with open(reference_path("machineconfig-%s" % version, "base-%s.yaml" % machine_type), "rb") as handle:
        return handle.read()


def test_v1_13_keeps_the_kubernetes_ca_in_cluster_ca(module_sim_cluster):
    controlplane, worker = module_sim_cluster.controlplanes[0], module_sim_cluster.workers[0]
    cp, wk = v1alpha1(controlplane.config_bytes()), v1alpha1(worker.config_bytes())
    assert pki.b64decode_strict(cp["cluster"]["ca"]["crt"]).startswith(b"-----BEGIN CERTIFICATE-----")
    assert pki.b64decode_strict(cp["cluster"]["ca"]["key"]).startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert pki.b64decode_strict(cp["machine"]["ca"]["key"]).startswith(b"-----BEGIN ED25519 PRIVATE KEY-----")
    assert wk["machine"]["ca"]["key"] == "" and wk["cluster"]["ca"]["key"] == ""
    assert KIND not in kinds(controlplane.config_bytes()) + kinds(worker.config_bytes())


@pytest.mark.parametrize("machine_type", ["controlplane", "worker"])
def test_shapes_match_the_reference_configs(make_sim_cluster, machine_type):
    cluster = make_sim_cluster(controlplanes=1, workers=1, talos_version=["v1.13.4", "v1.15.0"])
    ours = {"v1.13": cluster.controlplanes[0], "v1.15": cluster.workers[0]}
    for version, other in ours.items():
        if machine_type == "controlplane" and version == "v1.15" or machine_type == "worker" and version == "v1.13":
            continue
        node = other
        real = reference(version, machine_type)
        assert set(kinds(node.config_bytes())) <= set(kinds(real))
        real_v1, our_v1 = v1alpha1(real), v1alpha1(node.config_bytes())
        assert real_v1["machine"]["type"] == our_v1["machine"]["type"]
        assert set(real_v1["machine"]["ca"]) == set(our_v1["machine"]["ca"]) == {"crt", "key"}
        assert ("ca" in real_v1["cluster"]) == ("ca" in our_v1["cluster"])
        if KIND in kinds(real):
            assert set(kube_ca_document(real)) == set(kube_ca_document(node.config_bytes()))


def test_v1_15_layout_writes_pem_as_literal_blocks(make_sim_cluster):
    cluster = make_sim_cluster(controlplanes=1, workers=1, talos_version="v1.15.0")
    controlplane = cluster.controlplanes[0].config_bytes().decode()
    worker = cluster.workers[0].config_bytes().decode()
    assert "kind: %s\nissuingCA:\n    cert: |\n        -----BEGIN CERTIFICATE-----\n" % KIND in controlplane
    assert "    key: |\n        -----BEGIN EC PRIVATE KEY-----\n" in controlplane
    assert "kind: %s\nacceptedCAs:\n    - |\n      -----BEGIN CERTIFICATE-----\n" % KIND in worker
    assert "ca" not in v1alpha1(cluster.workers[0].config_bytes())["cluster"]
    with open(reference_path("machineconfig-v1.15", "base-worker.yaml"), encoding="utf-8") as handle:
        assert "acceptedCAs:\n    - |\n      -----BEGIN CERTIFICATE-----\n" in handle.read()


def test_kube_ca_document_and_cluster_ca_conflict(make_sim_cluster):
    cluster = make_sim_cluster(controlplanes=1, workers=1, talos_version="v1.15.0")
    worker = cluster.workers[0]
    legacy = {"crt": pki.b64(cluster.secrets.k8s_ca.cert_pem), "key": ""}
    both = edit_config(worker.config_bytes(), lambda docs: docs[0]["cluster"].update(ca=legacy))
    with pytest.raises(GRPCError) as conflict:
        apply(cluster, worker, both)
    assert conflict.value.status == Status.INVALID_ARGUMENT and "conflict" in conflict.value.message
    accepted = accept_kubernetes_ca(worker.config_bytes(), pki.new_kubernetes_ca().cert_pem)
    assert apply(cluster, worker, accepted).mode_details == "Applied configuration without a reboot"
    assert len(kube_ca_document(worker.config_bytes())["acceptedCAs"]) == 2


def test_kube_ca_document_holds_raw_pem(make_sim_cluster):
    cluster = make_sim_cluster(controlplanes=1, workers=1, talos_version="v1.15.0")
    worker = cluster.workers[0]
    encoded = pki.b64(cluster.secrets.k8s_ca.cert_pem)  # the v1alpha1 encoding is wrong here
    wrong = edit_config(worker.config_bytes(), lambda docs: [doc.update(acceptedCAs=[encoded])
                                                             for doc in docs if doc.get("kind") == KIND])
    with pytest.raises(GRPCError) as refused:
        apply(cluster, worker, wrong)
    assert refused.value.status == Status.INVALID_ARGUMENT and "no PEM certificate" in refused.value.message


def test_v1_13_does_not_know_the_kube_ca_document(make_sim_cluster):
    cluster = make_sim_cluster(controlplanes=1, workers=2, talos_version=["v1.13.4", "v1.13.4", "v1.15.0"])
    old, new = cluster.workers
    document = yaml.safe_dump({"apiVersion": "v1alpha1", "kind": KIND,
                               "acceptedCAs": [cluster.secrets.k8s_ca.cert_pem.decode()]}).encode()
    moved = edit_config(old.config_bytes(), lambda docs: docs[0]["cluster"].pop("ca")) + b"---\n" + document
    with pytest.raises(GRPCError) as refused:
        apply(cluster, old, moved)
    assert refused.value.status == Status.INVALID_ARGUMENT and "unknown document kind" in refused.value.message
    assert apply(cluster, new, new.config_bytes(), dry_run=True).mode_details.startswith("Dry run summary:")


def test_mixed_versions_per_node(make_sim_cluster):
    tags = ["v1.13.4", "v1.15.0", "v1.7.6", "v1.15.0", "v1.13.4"]
    cluster = make_sim_cluster(controlplanes=3, workers=2, talos_version=tags)
    for node, tag in zip(cluster.nodes, tags):
        assert node.talos_version == tag
        assert call(admin_credentials(cluster), node.address, VERSION).messages[0].version.tag == tag
        assert (KIND in kinds(node.config_bytes())) == (tag == "v1.15.0")

    def by_machine_type(_index, machine_type):
        return "v1.15.0" if machine_type == "worker" else "v1.12.0"
    by_type = make_sim_cluster(controlplanes=1, workers=1, talos_version=by_machine_type)
    assert [node.talos_version for node in by_type.nodes] == ["v1.12.0", "v1.15.0"]
    features = v1alpha1(by_type.controlplanes[0].config_bytes())["machine"]["features"]
    assert features["apidCheckExtKeyUsage"] is True  # written by contracts before v1.13
