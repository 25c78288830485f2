"""ApplyConfiguration as Talos validates and applies it (TALOS-FACTS §5, §6), each rule both ways."""

import asyncio
import socket
import time

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from talos_sim import pki
from talos_sim import wire
from talos_sim.testing import (SimClient, accept_os_ca, admin_client, admin_credentials, apply_request, call,
                               decode_spec, edit_config, field_numbers, get_request, load_documents, run,
                               wire_fields)

APPLY = "/machine.MachineService/ApplyConfiguration"
VERSION = "/machine.MachineService/Version"
GET = "/cosi.resource.State/Get"
MACHINE_CONFIG = get_request("config", "MachineConfigs.config.talos.dev", "v1alpha1")
MODE = apply_request(b"").__class__


def apply(cluster, node, data, **kwargs):
    return call(admin_credentials(cluster), node.address, APPLY, apply_request(data, **kwargs)).messages[0]


def refused(cluster, node, data, status=Status.INVALID_ARGUMENT, **kwargs):
    before = node.config_bytes()
    with pytest.raises(GRPCError) as error:
        apply(cluster, node, data, **kwargs)
    assert error.value.status == status, error.value
    assert node.config_bytes() == before
    return error.value.message


def machine(documents):
    return next(document for document in documents if "kind" not in document)["machine"]


def cluster_section(documents):
    return next(document for document in documents if "kind" not in document)["cluster"]


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in %.1fs" % timeout)
        time.sleep(0.02)


def test_no_reboot_applies_and_stores_the_exact_bytes(sim_cluster):
    cluster = sim_cluster
    node = cluster.controlplanes[0]
    new_ca = pki.new_os_ca()
    data = b"# a comment Talos keeps verbatim\n" + accept_os_ca(node.config_bytes(), new_ca.cert_pem)
    reply = apply(cluster, node, data)
    assert reply.mode == MODE.NO_REBOOT and reply.mode_details == "Applied configuration without a reboot"
    assert node.config_bytes() == data
    resource = call(admin_credentials(cluster), node.address, GET, MACHINE_CONFIG).resource
    assert resource.metadata.version == "2"
    assert decode_spec(resource, "resource.config.MachineConfigSpec").yaml_marshalled == data


def test_parse_error_is_invalid_argument(module_sim_cluster):
    node = module_sim_cluster.workers[0]
    assert "failed to parse config" in refused(module_sim_cluster, node, b"machine: [unclosed\n")
    assert "failed to parse config" in refused(module_sim_cluster, node, b"- a list\n")
    assert apply(module_sim_cluster, node, node.config_bytes()).mode == MODE.NO_REBOOT


def test_machine_type_cannot_change(module_sim_cluster):
    node = module_sim_cluster.workers[0]
    as_controlplane = module_sim_cluster.controlplanes[0].config_bytes()  # valid, but for another type
    assert "machine type can't be changed" in refused(module_sim_cluster, node, as_controlplane)
    assert apply(module_sim_cluster, node, node.config_bytes()).mode_details


def test_controlplane_needs_the_ca_key(module_sim_cluster):
    node = module_sim_cluster.controlplanes[1]
    without_key = edit_config(node.config_bytes(), lambda docs: machine(docs)["ca"].update(key=""))
    assert "issuing CA key is required for controlplane nodes" in refused(module_sim_cluster, node, without_key)
    without_ca = edit_config(node.config_bytes(), lambda docs: machine(docs).pop("ca"))
    assert "issuing CA is required (.machine.ca)" in refused(module_sim_cluster, node, without_ca)
    assert apply(module_sim_cluster, node, node.config_bytes(), dry_run=True).mode == MODE.NO_REBOOT


def test_worker_must_not_carry_a_ca_key(module_sim_cluster):
    cluster = module_sim_cluster
    worker = cluster.workers[0]
    key = pki.b64(cluster.secrets.os_ca.key_pem)
    with_key = edit_config(worker.config_bytes(), lambda docs: machine(docs)["ca"].update(key=key))
    assert "CA key is not allowed on non-controlplane nodes" in refused(cluster, worker, with_key)
    k8s_key = pki.b64(cluster.secrets.k8s_ca.key_pem)
    with_k8s_key = edit_config(worker.config_bytes(), lambda docs: cluster_section(docs)["ca"].update(key=k8s_key))
    assert "Kubernetes API CA key is not allowed" in refused(cluster, worker, with_k8s_key)
    assert apply(cluster, worker, worker.config_bytes(), dry_run=True).mode == MODE.NO_REBOOT


def test_every_node_needs_an_issuing_or_accepted_ca(module_sim_cluster):
    cluster = module_sim_cluster
    worker = cluster.workers[1]
    crt = machine(load_documents(worker.config_bytes()))["ca"]["crt"]
    no_ca = edit_config(worker.config_bytes(), lambda docs: machine(docs).pop("ca"))
    assert "issuing CA or some accepted CAs are required" in refused(cluster, worker, no_ca)

    def accepted_only(docs):
        machine(docs).pop("ca")
        machine(docs)["acceptedCAs"] = [{"crt": crt}]
    reply = apply(cluster, worker, edit_config(worker.config_bytes(), accepted_only), dry_run=True)
    assert reply.mode_details.startswith("Dry run summary:")


def test_certificates_must_decode(module_sim_cluster):
    cluster = module_sim_cluster
    node = cluster.workers[0]

    def accepted(value):
        return edit_config(node.config_bytes(), lambda docs: machine(docs).update(acceptedCAs=[{"crt": value}]))
    assert "illegal base64" in refused(cluster, node, accepted("not base64!"))
    assert "no PEM certificate" in refused(cluster, node, accepted(pki.b64(b"just text")))
    raw_pem = cluster.secrets.os_ca.cert_pem.decode()  # v1alpha1 wants base64 of the PEM, not PEM
    assert "illegal base64" in refused(cluster, node, accepted(raw_pem))
    assert apply(cluster, node, accepted(pki.b64(pki.new_os_ca().cert_pem)), dry_run=True).mode_details


def test_unknown_keys_in_ca_fields_are_refused(module_sim_cluster):
    node = module_sim_cluster.workers[0]
    typo = edit_config(node.config_bytes(), lambda docs: machine(docs).update(acceptedCAs=[{"cert": "x"}]))
    assert "unknown keys found during decoding" in refused(module_sim_cluster, node, typo)


def test_dry_run_returns_a_diff_and_changes_nothing(sim_cluster):
    cluster = sim_cluster
    node = cluster.controlplanes[0]
    before = node.config_bytes()
    changed = accept_os_ca(before, pki.new_os_ca().cert_pem)
    reply = apply(cluster, node, changed, dry_run=True)
    assert reply.mode_details.startswith(
        "Dry run summary:\nApplied configuration without a reboot (skipped in dry-run).")
    assert "\n+    acceptedCAs:" in reply.mode_details and not reply.warnings
    assert node.config_bytes() == before
    assert call(admin_credentials(cluster), node.address, GET, MACHINE_CONFIG).resource.metadata.version == "1"
    assert "No changes." in apply(cluster, node, before, dry_run=True).mode_details


def test_changes_needing_a_reboot_are_refused_in_no_reboot_mode(module_sim_cluster):
    cluster = module_sim_cluster
    node = cluster.workers[0]
    disks = edit_config(node.config_bytes(), lambda docs: machine(docs).update(disks=[{"device": "/dev/sdb"}]))
    assert "can't be applied in immediate mode" in refused(cluster, node, disks)
    assert "can't be applied in immediate mode" in refused(cluster, node, disks, mode="TRY")
    assert apply(cluster, node, disks, mode="AUTO", dry_run=True).mode == MODE.REBOOT
    ca_change = accept_os_ca(node.config_bytes(), pki.new_os_ca().cert_pem)
    assert apply(cluster, node, ca_change, mode="AUTO", dry_run=True).mode == MODE.NO_REBOOT


def test_reboot_mode_reboots_the_node_up_to_v1_13(make_sim_cluster):
    cluster = make_sim_cluster(controlplanes=1, workers=1, talos_version="v1.13.4", reboot_duration=0.5)
    node = cluster.workers[0]
    data = accept_os_ca(node.config_bytes(), pki.new_os_ca().cert_pem)
    raw = call(admin_credentials(cluster), node.address, APPLY, apply_request(data, mode="REBOOT"), raw=True)
    reply = wire.message_class("machine.ApplyConfigurationResponse").FromString(raw).messages[0]
    assert reply.mode == MODE.REBOOT and reply.mode_details == "Applied configuration with a reboot"
    (_number, entry), = wire_fields(raw)
    assert field_numbers(entry) == [4]  # REBOOT (0): no mode field on the wire
    wait_for(lambda: not node.is_up)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((node.address, 50000), timeout=2).close()
    wait_for(lambda: node.is_up)
    assert node.config_bytes() == data
    assert call(admin_credentials(cluster), node.address, VERSION).messages[0].version.tag == "v1.13.4"


def test_reboot_mode_is_unimplemented_from_v1_14(make_sim_cluster):
    cluster = make_sim_cluster(controlplanes=1, workers=1, talos_version="v1.15.0")
    node = cluster.workers[0]
    message = refused(cluster, node, node.config_bytes(), status=Status.UNIMPLEMENTED, mode="REBOOT")
    assert message.startswith("the REBOOT mode is not supported")
    assert node.is_up
    assert apply(cluster, node, node.config_bytes(), mode="NO_REBOOT").mode == MODE.NO_REBOOT


def test_staged_keeps_the_active_config_until_reboot(make_sim_cluster):
    cluster = make_sim_cluster(controlplanes=1, workers=1, reboot_duration=0.2)
    node = cluster.workers[0]
    before = node.config_bytes()
    data = accept_os_ca(before, pki.new_os_ca().cert_pem)
    reply = apply(cluster, node, data, mode="STAGED")
    assert reply.mode == MODE.STAGED and "after the next reboot" in reply.mode_details
    assert node.config_bytes() == before and node.staged_config_bytes() == data
    node.reboot()
    wait_for(lambda: node.is_up and node.config_bytes() == data)


def test_try_mode_rolls_back_unless_confirmed(sim_cluster):
    cluster = sim_cluster
    node = cluster.workers[0]
    before = node.config_bytes()
    tried = accept_os_ca(before, pki.new_os_ca().cert_pem)
    reply = apply(cluster, node, tried, mode="TRY", try_timeout=0.5)
    assert reply.mode == MODE.TRY and reply.mode_details.endswith("rolled back in 0.5s")
    assert node.config_bytes() == tried
    wait_for(lambda: node.config_bytes() == before)
    # Applied again and confirmed by a NO_REBOOT apply: no rollback.
    apply(cluster, node, tried, mode="TRY", try_timeout=0.5)
    apply(cluster, node, tried, mode="NO_REBOOT")
    time.sleep(0.8)
    assert node.config_bytes() == tried


def test_concurrent_apply_is_refused(sim_cluster):
    cluster = sim_cluster
    node = cluster.workers[0]
    node.set_latency(0.5)
    request = apply_request(node.config_bytes())

    async def two_at_once():
        async with admin_client(cluster) as first, admin_client(cluster) as second:
            return await asyncio.gather(first.call(node.address, APPLY, request),
                                        second.call(node.address, APPLY, request), return_exceptions=True)

    outcomes = run(two_at_once())
    errors = [outcome for outcome in outcomes if isinstance(outcome, GRPCError)]
    assert len(errors) == 1 and errors[0].status == Status.FAILED_PRECONDITION, outcomes
    assert sum(1 for outcome in outcomes if not isinstance(outcome, Exception)) == 1

    async def one_after_the_other():
        async with SimClient(*admin_credentials(cluster)) as client:
            return [await client.call(node.address, APPLY, request) for _attempt in range(2)]
    assert len(run(one_after_the_other())) == 2
