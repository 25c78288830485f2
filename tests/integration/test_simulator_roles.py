"""Roles from the client certificate's O (TALOS-FACTS §4), allowed and refused, direct and proxied."""

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from talos_sim import pki
from talos_sim.testing import apply_request, call, get_request

VERSION = "/machine.MachineService/Version"
APPLY = "/machine.MachineService/ApplyConfiguration"
KUBECONFIG = "/machine.MachineService/Kubeconfig"
GET = "/cosi.resource.State/Get"
LIST = "/cosi.resource.State/List"
OS_ROOT = get_request("secrets", "OSRootSecrets.secrets.talos.dev", "os")
MACHINE_CONFIG = get_request("config", "MachineConfigs.config.talos.dev", "v1alpha1")
KUBERNETES_ROOT = get_request("secrets", "KubernetesRootSecrets.secrets.talos.dev", "k8s")


def credentials(cluster, *roles):
    return [cluster.secrets.os_ca.cert_pem], pki.talos_client_certificate(cluster.secrets.os_ca, roles)


def denied(creds, address, path, request=None, **kwargs):
    with pytest.raises(GRPCError) as refused:
        call(creds, address, path, request, **kwargs)
    assert refused.value.status == Status.PERMISSION_DENIED, refused.value
    return refused.value


def test_admin_reads_secrets_and_applies(module_sim_cluster):
    cluster = module_sim_cluster
    admin = credentials(cluster, "os:admin")
    node = cluster.controlplanes[0]
    for request in (OS_ROOT, MACHINE_CONFIG, KUBERNETES_ROOT):
        assert call(admin, node.address, GET, request).resource.metadata.version == "1"
    reply = call(admin, node.address, APPLY, apply_request(node.config_bytes(), dry_run=True))
    assert reply.messages[0].mode_details.startswith("Dry run summary:")
    assert len(call(admin, node.address, KUBECONFIG)) >= 1


@pytest.mark.parametrize("role", ["os:reader", "os:operator"])
def test_reader_and_operator_see_version_but_no_secrets(module_sim_cluster, role):
    cluster = module_sim_cluster
    creds = credentials(cluster, role)
    node = cluster.controlplanes[0]
    assert call(creds, node.address, VERSION).messages[0].version.tag == node.talos_version
    members = get_request("cluster", "Members.cluster.talos.dev", node.name)
    assert call(creds, node.address, GET, members).resource.metadata.id == node.name  # not sensitive
    for request in (OS_ROOT, MACHINE_CONFIG, KUBERNETES_ROOT):
        denied(creds, node.address, GET, request)
    denied(creds, node.address, APPLY, apply_request(node.config_bytes()))
    denied(creds, node.address, KUBECONFIG)


def test_role_is_carried_through_the_endpoint(module_sim_cluster):
    """The endpoint presents os:impersonator and forwards the caller's role: reader stays reader."""
    cluster = module_sim_cluster
    reader, admin = credentials(cluster, "os:reader"), credentials(cluster, "os:admin")
    worker = cluster.workers[0]
    assert call(reader, cluster.endpoint, VERSION, node=worker.address).messages[0].version.tag
    denied(reader, cluster.endpoint, GET, OS_ROOT, node=worker.address)
    assert call(admin, cluster.endpoint, GET, OS_ROOT, node=worker.address).resource.metadata.id == "os"


def test_impersonator_role_comes_from_metadata(module_sim_cluster):
    """Talos trusts `talos-role` metadata only from os:impersonator certificates (another apid)."""
    cluster = module_sim_cluster
    impersonator = credentials(cluster, "os:impersonator")
    reader = credentials(cluster, "os:reader")
    node = cluster.controlplanes[0]
    as_admin = [("talos-role", "os:admin")]
    assert call(impersonator, node.address, GET, OS_ROOT, metadata=as_admin).resource.metadata.id == "os"
    denied(impersonator, node.address, VERSION)  # no role in metadata: the impersonator role alone
    denied(reader, node.address, GET, OS_ROOT, metadata=as_admin)  # ignored from anyone else


def test_certificate_without_a_known_role_is_denied(module_sim_cluster):
    cluster = module_sim_cluster
    denied(credentials(cluster, "example:nobody"), cluster.endpoint, VERSION)
    assert call(credentials(cluster, "example:nobody", "os:reader"), cluster.endpoint, VERSION).messages
