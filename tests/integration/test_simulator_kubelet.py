"""Kubernetes side: kubelet restarts on a Kubernetes CA change, node readiness, the Kubeconfig stream."""

import base64
import http.client
import json
import tarfile
import time

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from talos_sim import machineconfig, pki, tlsctx
from talos_sim.testing import (SimClient, accept_kubernetes_ca, accept_os_ca, admin_credentials, apply_request, call,
                               decode_spec, edit_config, get_request, kubeconfig_from_stream, run, swap_kubernetes_ca,
                               watch_request)

APPLY = "/machine.MachineService/ApplyConfiguration"
GET = "/cosi.resource.State/Get"
KUBECONFIG = "/machine.MachineService/Kubeconfig"
KUBELET = ("runtime", "Services.v1alpha1.talos.dev", "kubelet")
SERVICE = "talos.resource.definitions.v1alpha1.ServiceSpec"


def kubelet_events(cluster, node, new_config, count):
    """Apply `new_config` through the endpoint while watching the node's kubelet service."""
    async def scenario():
        async with SimClient(*admin_credentials(cluster)) as client:
            async with client.watch(cluster.endpoint, watch_request(*KUBELET), node=node.address) as stream:
                await stream.recv_message()  # the empty frame
                initial = await stream.recv_message()
                await client.call(cluster.endpoint, APPLY, apply_request(new_config), node=node.address, fresh=True)
                return initial, [await stream.recv_message() for _event in range(count)]
    return run(scenario())


def state(response):
    event = response.event[0]
    spec = decode_spec(event.resource, SERVICE)
    return event.event_type, spec.running, spec.healthy, event.resource.spec.proto_spec


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in %.1fs" % timeout)
        time.sleep(0.02)


def ready(cluster):
    return {entry["name"]: entry["ready"] for entry in cluster.kubernetes_nodes()}


@pytest.mark.parametrize("version", ["v1.13.4", "v1.15.0"])
def test_kubernetes_ca_change_restarts_the_kubelet(make_sim_cluster, version):
    cluster = make_sim_cluster(controlplanes=1, workers=1, talos_version=version, kubelet_restart_delay=0.3)
    worker = cluster.workers[0]
    changed = accept_kubernetes_ca(worker.config_bytes(), pki.new_kubernetes_ca().cert_pem)
    initial, events = kubelet_events(cluster, worker, changed, 3)
    assert state(initial)[:3] == (0, True, True)
    stopped, started, healthy = (state(event) for event in events)
    assert stopped == (1, False, False, b"")  # all false: no proto_spec bytes at all
    assert started[:3] == (1, True, False)
    assert healthy[:3] == (1, True, True)
    assert all(ready(cluster).values())


def test_other_changes_leave_the_kubelet_alone(sim_cluster):
    cluster = sim_cluster
    worker = cluster.workers[0]
    before = call(admin_credentials(cluster), worker.address, GET, get_request(*KUBELET)).resource.metadata.version
    call(admin_credentials(cluster), worker.address, APPLY,
         apply_request(accept_os_ca(worker.config_bytes(), pki.new_os_ca().cert_pem)))
    time.sleep(cluster.kubelet_restart_delay * 3)
    after = call(admin_credentials(cluster), worker.address, GET, get_request(*KUBELET)).resource
    assert after.metadata.version == before


def test_readiness_needs_trust_both_ways(make_sim_cluster):
    cluster = make_sim_cluster(controlplanes=1, workers=2, kubelet_restart_delay=0.05)
    lost, kept = cluster.workers
    new_ca = pki.new_kubernetes_ca()

    def only_new(documents):
        documents[0]["cluster"]["ca"] = {"crt": pki.b64(new_ca.cert_pem), "key": ""}
    # A worker that trusts only a CA the API server does not serve with cannot be Ready.
    call(admin_credentials(cluster), lost.address, APPLY, apply_request(edit_config(lost.config_bytes(), only_new)))
    call(admin_credentials(cluster), kept.address, APPLY,
         apply_request(accept_kubernetes_ca(kept.config_bytes(), new_ca.cert_pem)))
    # initial state + stopped + running + healthy: the restart is over
    wait_for(lambda: all(node.resources.get(*KUBELET).version >= 4 for node in (lost, kept)))
    entries = {entry["name"]: entry for entry in cluster.kubernetes_nodes()}
    assert not entries[lost.name]["ready"] and entries[lost.name]["ready_reason"] == "KubeletNotReady"
    assert "does not trust the serving certificate" in entries[lost.name]["ready_message"]
    assert entries[kept.name]["ready"] and entries[cluster.controlplanes[0].name]["ready"]
    lost.down()
    assert cluster.kubernetes_nodes()[1]["ready_reason"] == "NodeStatusUnknown"


def patch_and_wait(cluster, node, data):
    """Apply through the endpoint, then wait until the node's kubelet restart (if any) is over."""
    before = node.resources.get(*KUBELET).version
    restarts = (machineconfig.parse(data, node.version).kubernetes.identity !=
                machineconfig.parse(node.config_bytes(), node.version).kubernetes.identity)
    call(admin_credentials(cluster), cluster.endpoint, APPLY, apply_request(data), node=node.address)
    cluster.settle()
    if restarts:
        wait_for(lambda: node.resources.get(*KUBELET).version >= before + 3)
    assert node.resources.get(*KUBELET).version == before + (3 if restarts else 0)


@pytest.mark.parametrize("version", ["v1.13.4", "v1.15.0"])
def test_kubernetes_ca_rotation_in_order_keeps_every_node_ready(make_sim_cluster, version):
    cluster = make_sim_cluster(controlplanes=2, workers=2, talos_version=version, kubelet_restart_delay=0.02)
    old, new = cluster.secrets.k8s_ca, pki.new_kubernetes_ca()
    phases = [lambda data: accept_kubernetes_ca(data, new.cert_pem),
              lambda data: swap_kubernetes_ca(data, new, keep_accepted=[old.cert_pem]),
              lambda data: swap_kubernetes_ca(data, new, keep_accepted=[])]
    for change in phases:
        for node in cluster.controlplanes + cluster.workers:
            patch_and_wait(cluster, node, change(node.config_bytes()))
            assert all(ready(cluster).values()), cluster.kubernetes_nodes()
    assert all(node.kubelet.client_issuer.fingerprint == new.fingerprint for node in cluster.nodes)


def test_dropping_the_old_kubernetes_ca_too_early_breaks_readiness(make_sim_cluster):
    cluster = make_sim_cluster(controlplanes=1, workers=1, kubelet_restart_delay=0.02)
    controlplane, worker = cluster.controlplanes[0], cluster.workers[0]
    old, new = cluster.secrets.k8s_ca, pki.new_kubernetes_ca()
    patch_and_wait(cluster, controlplane, accept_kubernetes_ca(controlplane.config_bytes(), new.cert_pem))
    patch_and_wait(cluster, worker, accept_kubernetes_ca(worker.config_bytes(), new.cert_pem))
    patch_and_wait(cluster, controlplane, swap_kubernetes_ca(controlplane.config_bytes(), new, [old.cert_pem]))
    assert all(ready(cluster).values())
    # The control plane drops the old CA while the worker's kubelet still holds an old-CA certificate.
    patch_and_wait(cluster, controlplane, swap_kubernetes_ca(controlplane.config_bytes(), new, []))
    entry = {item["name"]: item for item in cluster.kubernetes_nodes()}[worker.name]
    assert not entry["ready"] and "does not trust the kubelet client certificate" in entry["ready_message"]
    # The worker's own swap restarts its kubelet with a certificate from the new CA: Ready again.
    patch_and_wait(cluster, worker, swap_kubernetes_ca(worker.config_bytes(), new, [old.cert_pem]))
    assert all(ready(cluster).values())


def test_kubeconfig_stream(sim_cluster):
    cluster = sim_cluster
    controlplane = cluster.controlplanes[0]
    extra_ca = pki.new_kubernetes_ca()
    call(admin_credentials(cluster), controlplane.address, APPLY,
         apply_request(accept_kubernetes_ca(controlplane.config_bytes(), extra_ca.cert_pem)))
    chunks = call(admin_credentials(cluster), cluster.endpoint, KUBECONFIG, node=controlplane.address)
    assert len(chunks) > 1  # the archive has to be reassembled
    name, data, archive = kubeconfig_from_stream(chunks)
    assert name == "kubeconfig"
    # One header block and the padded content: no end-of-archive (two zero blocks) after it.
    assert len(archive) == tarfile.BLOCKSIZE + -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    kubeconfig = yaml.safe_load(data)
    cluster_entry = kubeconfig["clusters"][0]["cluster"]
    assert cluster_entry["server"] == "https://%s:6443" % controlplane.address
    cas = pki.load_certificates(base64.b64decode(cluster_entry["certificate-authority-data"]))
    assert {pki.fingerprint(ca) for ca in cas} == {cluster.secrets.k8s_ca.fingerprint, extra_ca.fingerprint}
    user = kubeconfig["users"][0]["user"]
    client = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
    assert client.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    assert _kube_get(controlplane.address, kubeconfig, "/api/v1/nodes")["kind"] == "NodeList"


def test_kubeconfig_only_on_control_planes(module_sim_cluster):
    with pytest.raises(GRPCError) as error:
        call(admin_credentials(module_sim_cluster), module_sim_cluster.workers[0].address, KUBECONFIG)
    assert error.value.status == Status.UNIMPLEMENTED


def test_refresh_kubeconfig_follows_the_endpoints_kubernetes_ca(sim_cluster):
    cluster = sim_cluster
    controlplane = cluster.controlplanes[0]
    new = pki.new_kubernetes_ca()
    call(admin_credentials(cluster), controlplane.address, APPLY, apply_request(
        swap_kubernetes_ca(controlplane.config_bytes(), new, keep_accepted=[cluster.secrets.k8s_ca.cert_pem])))
    with open(cluster.kubeconfig_path, encoding="utf-8") as handle:
        before = yaml.safe_load(handle)["clusters"][0]["cluster"]["certificate-authority-data"]
    with open(cluster.refresh_kubeconfig(), encoding="utf-8") as handle:
        kubeconfig = yaml.safe_load(handle)
    after = kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]
    assert before != after and new.cert_pem in base64.b64decode(after)
    client = x509.load_pem_x509_certificate(base64.b64decode(kubeconfig["users"][0]["user"]["client-certificate-data"]))
    assert pki.is_issued_by(client, new.cert)


def test_kubeconfig_file_works_against_the_api_server(module_sim_cluster):
    with open(module_sim_cluster.kubeconfig_path, encoding="utf-8") as handle:
        kubeconfig = yaml.safe_load(handle)
    nodes = _kube_get(module_sim_cluster.endpoint, kubeconfig, "/api/v1/nodes")
    statuses = {item["metadata"]["name"]: [c["status"] for c in item["status"]["conditions"] if c["type"] == "Ready"]
                for item in nodes["items"]}
    assert statuses == {node.name: ["True"] for node in module_sim_cluster.nodes}


def _kube_get(address, kubeconfig, path):
    cluster_entry, user = kubeconfig["clusters"][0]["cluster"], kubeconfig["users"][0]["user"]
    client = pki.CertKey.from_objects(
        x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"])),
        pki.load_private_key(base64.b64decode(user["client-key-data"])))
    context = tlsctx.client_context(client, [base64.b64decode(cluster_entry["certificate-authority-data"])])
    context.set_alpn_protocols(["http/1.1"])
    connection = http.client.HTTPSConnection(address, 6443, context=context, timeout=10)
    try:
        connection.request("GET", path, headers={"Accept": "application/json"})
        response = connection.getresponse()
        assert response.status == 200, response.read()
        return json.loads(response.read())
    finally:
        connection.close()
