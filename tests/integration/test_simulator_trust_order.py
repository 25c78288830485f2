"""Why control planes are patched before workers (TALOS-FACTS §4, controllers/secrets/api.go generateWorker).

A worker gets its client trust bundle from a control plane's trustd: the control plane's
accepted CAs at that moment, asked for again only when the worker's own config changes.
"""

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from talos_sim import pki
from talos_sim.testing import accept_os_ca, apply_request, call, swap_os_ca

VERSION = "/machine.MachineService/Version"
APPLY = "/machine.MachineService/ApplyConfiguration"


class Operator:
    """What a rotation tool does: every call on a new connection, through the endpoint."""

    def __init__(self, cluster, ca_pems, certificate):
        self.cluster = cluster
        self.credentials = (ca_pems, certificate)

    def patch(self, node, data):
        call(self.credentials, self.cluster.endpoint, APPLY, apply_request(data), node=node.address)
        self.cluster.settle()

    def reachable(self, node) -> bool:
        try:
            call(self.credentials, self.cluster.endpoint, VERSION, node=node.address)
        except GRPCError as error:
            assert error.status == Status.UNAVAILABLE, error
            return False
        return True


def test_worker_patched_before_the_control_planes_becomes_unreachable(sim_cluster):
    cluster = sim_cluster
    old, new = cluster.secrets.os_ca, pki.new_os_ca()
    operator = Operator(cluster, [old.cert_pem, new.cert_pem], cluster.admin)
    early, late = cluster.workers

    operator.patch(early, accept_os_ca(early.config_bytes(), new.cert_pem))  # too early
    for node in cluster.controlplanes:
        operator.patch(node, accept_os_ca(node.config_bytes(), new.cert_pem))
    operator.patch(late, accept_os_ca(late.config_bytes(), new.cert_pem))  # after the control planes
    assert [pki.fingerprint(cert) for cert in pki.load_certificates(b"".join(early.client_trust_pems))] == [
        old.fingerprint]  # trustd's bundle at that moment: the control plane's old CA only
    for node in cluster.controlplanes:
        operator.patch(node, swap_os_ca(node.config_bytes(), new, keep_accepted=[old.cert_pem]))

    assert operator.reachable(late)
    with pytest.raises(GRPCError) as error:
        call(operator.credentials, cluster.endpoint, VERSION, node=early.address)
    assert error.value.status == Status.UNAVAILABLE  # the endpoint's impersonator now comes from the new CA
    # The worker itself is fine and still trusts the old CA directly; it just never asked again.
    assert call(operator.credentials, early.address, VERSION).messages[0].version.tag
    # Its next own config change makes it ask trustd again, and it is reachable again.
    call(operator.credentials, early.address, APPLY,
         apply_request(swap_os_ca(early.config_bytes(), new, keep_accepted=[old.cert_pem])))
    cluster.settle()
    assert operator.reachable(early)


def test_control_planes_first_in_every_phase_keeps_every_node_reachable(sim_cluster):
    cluster = sim_cluster
    old, new = cluster.secrets.os_ca, pki.new_os_ca()
    new_admin = pki.talos_client_certificate(new)
    both = [old.cert_pem, new.cert_pem]
    ordered = cluster.controlplanes + cluster.workers
    phases = [
        (Operator(cluster, both, cluster.admin), lambda data: accept_os_ca(data, new.cert_pem)),
        (Operator(cluster, both, cluster.admin), lambda data: swap_os_ca(data, new, keep_accepted=[old.cert_pem])),
        (Operator(cluster, both, new_admin), lambda data: swap_os_ca(data, new, keep_accepted=[])),
    ]
    for operator, change in phases:
        for node in ordered:
            operator.patch(node, change(node.config_bytes()))
            assert all(operator.reachable(other) for other in cluster.nodes), "lost a node after %s" % node.name

    old_only = ([old.cert_pem], cluster.admin)
    new_only = ([new.cert_pem], new_admin)
    for node in cluster.nodes:
        assert call(new_only, node.address, VERSION).messages[0].version.tag
        assert call(new_only, cluster.endpoint, VERSION, node=node.address).messages[0].version.tag
        with pytest.raises(Exception):
            call(old_only, node.address, VERSION)  # the old CA is gone everywhere


def test_a_control_plane_keeps_its_certificates_when_the_new_ca_key_does_not_match(sim_cluster):
    """Talos accepts such a config, but its controller fails: apid keeps serving the old certificate."""
    cluster = sim_cluster
    controlplane = cluster.controlplanes[1]
    new, unrelated = pki.new_os_ca(), pki.new_os_ca()
    operator = Operator(cluster, [cluster.secrets.os_ca.cert_pem, new.cert_pem], cluster.admin)
    mismatched = pki.CertKey(new.cert, unrelated.key, new.cert_pem, unrelated.key_pem)
    operator.patch(controlplane, swap_os_ca(controlplane.config_bytes(), mismatched,
                                            keep_accepted=[cluster.secrets.os_ca.cert_pem]))
    assert pki.is_issued_by(pki.load_certificate(controlplane.server_certificate_pem), cluster.secrets.os_ca.cert)
    assert "does not match" in controlplane.controller_errors[-1]
    operator.patch(controlplane, swap_os_ca(controlplane.config_bytes(), new,
                                            keep_accepted=[cluster.secrets.os_ca.cert_pem]))
    assert pki.is_issued_by(pki.load_certificate(controlplane.server_certificate_pem), new.cert)
    assert operator.reachable(controlplane)
