"""COSI State Get/List/Watch with Talos' resource shapes and wire details (TALOS-FACTS §5)."""

import asyncio
import ipaddress

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from talos_sim import pki, wire
from talos_sim.testing import (SimClient, accept_os_ca, admin_credentials, apply_request, call, decode_spec,
                               edit_config, field_numbers, get_request, run, watch_request)

GET = "/cosi.resource.State/Get"
LIST = "/cosi.resource.State/List"
APPLY = "/machine.MachineService/ApplyConfiguration"
OS_ROOT = ("secrets", "OSRootSecrets.secrets.talos.dev", "os")
K8S_ROOT = ("secrets", "KubernetesRootSecrets.secrets.talos.dev", "k8s")
MACHINE_CONFIG = ("config", "MachineConfigs.config.talos.dev", "v1alpha1")
MEMBERS = ("cluster", "Members.cluster.talos.dev")
KUBELET = ("runtime", "Services.v1alpha1.talos.dev", "kubelet")


def get(cluster, node, kind, **kwargs):
    return call(admin_credentials(cluster), cluster.endpoint, GET, get_request(*kind), node=node.address,
                **kwargs).resource


def status_of(cluster, node, kind):
    with pytest.raises(GRPCError) as error:
        get(cluster, node, kind)
    return error.value


def test_metadata_shape(module_sim_cluster):
    resource = get(module_sim_cluster, module_sim_cluster.controlplanes[0], MACHINE_CONFIG)
    metadata = resource.metadata
    assert (metadata.namespace, metadata.type, metadata.id) == MACHINE_CONFIG
    assert metadata.version == "1" and metadata.phase == "running"
    assert metadata.created.seconds > 0 and metadata.updated.seconds >= metadata.created.seconds


def test_os_root_on_control_plane_and_worker(sim_cluster):
    cluster = sim_cluster
    controlplane, worker = cluster.controlplanes[0], cluster.workers[0]
    os_ca = cluster.secrets.os_ca.cert_pem
    spec_name = "talos.resource.definitions.secrets.OSRootSpec"
    with_sans = edit_config(controlplane.config_bytes(), lambda docs: docs[0]["machine"].update(
        certSANs=["10.9.8.7", "api.example.org"]))
    call(admin_credentials(cluster), controlplane.address, APPLY, apply_request(with_sans))
    resource = get(cluster, controlplane, OS_ROOT)
    # Go struct order, not field-number order.
    assert field_numbers(resource.spec.proto_spec) == [1, 5, 2, 3, 4]
    spec = decode_spec(resource, spec_name)
    assert spec.issuing_ca.crt == os_ca and spec.issuing_ca.key.startswith(b"-----BEGIN ED25519 PRIVATE KEY-----")
    assert [item.crt for item in spec.accepted_c_as] == [os_ca]
    assert ipaddress.ip_address(spec.cert_sani_ps[0].ip) == ipaddress.ip_address("10.9.8.7")
    assert list(spec.cert_sandns_names) == ["api.example.org"] and spec.token
    worker_spec = decode_spec(get(cluster, worker, OS_ROOT), spec_name)
    assert not worker_spec.HasField("issuing_ca")
    assert [item.crt for item in worker_spec.accepted_c_as] == [os_ca]  # the CA stays in the accepted list


def test_kubernetes_root_only_on_control_planes(module_sim_cluster):
    cluster = module_sim_cluster
    resource = get(cluster, cluster.controlplanes[1], K8S_ROOT)
    numbers = field_numbers(resource.spec.proto_spec)
    assert 7 in numbers and 15 in numbers and set(numbers) - {1, 7, 15}  # extra fields a decoder skips
    spec = decode_spec(resource, "talos.resource.definitions.secrets.KubernetesRootSpec")
    assert spec.issuing_ca.crt == cluster.secrets.k8s_ca.cert_pem
    assert spec.issuing_ca.key.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert [item.crt for item in spec.accepted_c_as] == [cluster.secrets.k8s_ca.cert_pem]
    assert status_of(cluster, cluster.workers[0], K8S_ROOT).status == Status.NOT_FOUND


def test_missing_resources_and_unknown_types(module_sim_cluster):
    cluster = module_sim_cluster
    node = cluster.workers[0]
    assert status_of(cluster, node, ("config", "MachineConfigs.config.talos.dev", "nope")).status == Status.NOT_FOUND
    wrong_namespace = ("runtime", "MachineConfigs.config.talos.dev", "v1alpha1")
    assert status_of(cluster, node, wrong_namespace).status == Status.NOT_FOUND
    assert status_of(cluster, node, ("secrets", "EtcdRootSecrets.secrets.talos.dev", "etcd")).status == \
        Status.PERMISSION_DENIED
    assert get(cluster, node, MACHINE_CONFIG).metadata.id == "v1alpha1"


@pytest.mark.parametrize("split", [False, True])
def test_members(make_sim_cluster, split):
    cluster = make_sim_cluster(controlplanes=2, workers=2, split_members=split)
    request = wire.message_class("cosi.resource.ListRequest")(namespace=MEMBERS[0], type=MEMBERS[1])
    for node in cluster.nodes:
        items = call(admin_credentials(cluster), cluster.endpoint, LIST, request, node=node.address)
        specs = {item.resource.metadata.id: decode_spec(item.resource, "talos.resource.definitions.cluster.MemberSpec")
                 for item in items}
        expected = [peer for peer in cluster.nodes if not split or peer.controlplane == node.controlplane]
        assert sorted(specs) == sorted(peer.name for peer in expected)
        for peer in expected:
            spec = specs[peer.name]
            assert spec.addresses[0].ip == ipaddress.ip_address(peer.address).packed  # 4 raw bytes
            assert spec.machine_type == (2 if peer.controlplane else 3) and spec.hostname == peer.name


def test_kubelet_service_spec(module_sim_cluster):
    resource = get(module_sim_cluster, module_sim_cluster.workers[1], KUBELET)
    spec = decode_spec(resource, "talos.resource.definitions.v1alpha1.ServiceSpec")
    assert spec.running and spec.healthy and not spec.unknown


def test_watch_single_resource(sim_cluster):
    """Empty frame, the current state (CREATED: no event_type on the wire), then UPDATED with `old`."""
    cluster = sim_cluster
    node = cluster.workers[0]
    new_config = accept_os_ca(node.config_bytes(), pki.new_os_ca().cert_pem)

    async def scenario():
        async with SimClient(*admin_credentials(cluster)) as client:
            request = watch_request(*MACHINE_CONFIG)
            async with client.watch(cluster.endpoint, request, node=node.address) as stream:
                ready = await stream.recv_message()
                initial = await stream.recv_message()
                await client.call(cluster.endpoint, APPLY, apply_request(new_config), node=node.address, fresh=True)
                updated = await stream.recv_message()
            return ready, initial, updated

    ready, initial, updated = run(scenario())
    assert ready.SerializeToString() == b""
    event = initial.event[0]
    assert event.event_type == 0 and 2 not in field_numbers(event.SerializeToString())
    assert event.resource.metadata.version == "1"
    change = updated.event[0]
    assert change.event_type == 1 and change.resource.metadata.version == "2"
    assert decode_spec(change.resource, "resource.config.MachineConfigSpec").yaml_marshalled == new_config
    assert change.old.metadata.version == "1"


def test_watch_missing_resource_and_kind_watch(module_sim_cluster):
    cluster = module_sim_cluster
    node = cluster.workers[0]

    async def scenario():
        async with SimClient(*admin_credentials(cluster)) as client:
            missing = watch_request("config", MACHINE_CONFIG[1], "")  # id set (empty): a single-resource watch
            async with client.watch(node.address, missing) as stream:
                frames = [await stream.recv_message(), await stream.recv_message()]
            async with client.watch(node.address, watch_request(*MACHINE_CONFIG[:2], None)) as stream:
                kind_frames = [await stream.recv_message()]
                try:
                    kind_frames.append(await asyncio.wait_for(stream.recv_message(), 0.3))
                except asyncio.TimeoutError:
                    pass
            return frames, kind_frames

    (ready, tombstone), kind_frames = run(scenario())
    assert ready.SerializeToString() == b""
    assert tombstone.event[0].event_type == 2 and tombstone.event[0].resource.metadata.version == "undefined"
    # Without an id, no initial state is sent: only the empty frame until something changes.
    assert [frame.SerializeToString() for frame in kind_frames] == [b""]
    # An id set to "" is still on the wire (explicit presence): that made the first watch single-resource.
    assert field_numbers(watch_request("config", "x", "").SerializeToString()) == [1, 2, 3, 4, 5]
