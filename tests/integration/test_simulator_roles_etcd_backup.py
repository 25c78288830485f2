"""The os:etcd:backup role (TALOS-FACTS §4, machined's authz rules): authenticated, but no Version, no apply, no secrets."""

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from talos_sim import pki
from talos_sim.testing import apply_request, call, get_request

VERSION = "/machine.MachineService/Version"
APPLY = "/machine.MachineService/ApplyConfiguration"
GET = "/cosi.resource.State/Get"


def denied(creds, address, path, request=None, **kwargs):
    with pytest.raises(GRPCError) as refused:
        call(creds, address, path, request, **kwargs)
    assert refused.value.status == Status.PERMISSION_DENIED, refused.value


@pytest.mark.parametrize("through_endpoint", [False, True])
def test_etcd_backup_is_denied_version_apply_and_secrets(module_sim_cluster, through_endpoint):
    cluster = module_sim_cluster
    creds = [cluster.secrets.os_ca.cert_pem], pki.talos_client_certificate(cluster.secrets.os_ca, ("os:etcd:backup",))
    node = cluster.workers[0] if through_endpoint else cluster.controlplanes[0]
    address, header = (cluster.endpoint, node.address) if through_endpoint else (node.address, None)
    denied(creds, address, VERSION, node=header)
    denied(creds, address, APPLY, apply_request(b"", dry_run=True), node=header)
    denied(creds, address, GET, get_request("secrets", "OSRootSecrets.secrets.talos.dev", "os"), node=header)


def test_a_reader_is_refused_an_apply_even_a_dry_run_of_nothing(module_sim_cluster):
    """The role check comes before the request is looked at, as Talos' authz interceptor does."""
    cluster = module_sim_cluster
    creds = [cluster.secrets.os_ca.cert_pem], pki.talos_client_certificate(cluster.secrets.os_ca, ("os:reader",))
    denied(creds, cluster.endpoint, APPLY, apply_request(b"", dry_run=True))
