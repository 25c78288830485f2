"""After the rotation, every Talos API user: talosconfigs reissued keeping their roles, new users issued, each working
on every node with exactly its roles, the old ones refused; check mode changes nothing; no key in any output."""

import os
import stat

import pytest
import yaml
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from _playbook import private_key_needles, run_playbook

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import TalosConfig
from talos_sim import pki
from talos_sim.testing import apply_request, call

VERSION = "/machine.MachineService/Version"
APPLY = "/machine.MachineService/ApplyConfiguration"


@pytest.fixture(name="cluster")
def fixture_cluster(make_sim_cluster):
    return make_sim_cluster(controlplanes=1, workers=1)


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def user_talosconfig(cluster, path, *roles):
    """A talosconfig a user holds before the rotation: the cluster's context, a certificate of the old CA with `roles`."""
    with open(path, "wb") as handle:
        handle.write(cluster.talosconfig(pki.talos_client_certificate(cluster.secrets.os_ca, roles)))
    os.chmod(path, 0o600)
    return str(path)


def creds_of(path, server_ca=None):
    context = TalosConfig.load(str(path)).get_context()
    return [server_ca or context.ca], pki.CertKey.from_objects(pki.load_certificate(context.crt), pki.load_private_key(context.key))


def assert_roles_enforced(cluster, path, roles):
    """Every node, directly and through the endpoint: Version as Talos allows it, an apply only for os:admin."""
    creds = creds_of(path)
    for node in cluster.nodes:
        for address, header in ((node.address, None), (cluster.endpoint, node.address)):
            if {"os:admin", "os:operator", "os:reader"} & set(roles):
                assert call(creds, address, VERSION, node=header).messages
            else:
                with pytest.raises(GRPCError) as refused:
                    call(creds, address, VERSION, node=header)
                assert refused.value.status == Status.PERMISSION_DENIED
            request = apply_request(node.config_bytes(), dry_run=True)
            if "os:admin" in roles:
                assert call(creds, address, APPLY, request, node=header).messages[0].mode_details.startswith("Dry run summary:")
            else:
                with pytest.raises(GRPCError) as refused:
                    call(creds, address, APPLY, request, node=header)
                assert refused.value.status == Status.PERMISSION_DENIED, "%s was not refused an apply" % path


def assert_refused_by_every_node(cluster, path, server_ca):
    creds = creds_of(path, server_ca)
    for node in cluster.nodes:
        with pytest.raises(Exception) as refused:  # the TLS handshake fails: the node no longer trusts the old CA
            call(creds, node.address, VERSION, fresh=True)
        assert not isinstance(refused.value, GRPCError) or refused.value.status == Status.UNAVAILABLE


def test_users_get_credentials_from_the_new_ca_with_exactly_their_roles(cluster, tmp_path):
    rotation_dir = str(tmp_path / "rotation")
    holders = {role: user_talosconfig(cluster, tmp_path / ("%s.talosconfig" % role.split(":")[1]), role)
               for role in ("os:admin", "os:operator", "os:reader")}
    handout = tmp_path / "handout"
    extra_vars = {
        "rotate_ca_talosconfigs": [{"path": path} for path in holders.values()],
        "rotate_ca_talosconfig_users": [
            {"name": "auditor", "roles": ["os:reader"], "path": str(handout / "auditor")},
            {"name": "backup-bot", "roles": ["os:etcd:backup"], "path": str(handout / "backup-bot"), "lifetime": 720},
        ],
    }
    before = {path: read(path) for path in holders.values()}
    configs = {node.name: node.config_bytes() for node in cluster.nodes}

    dry = run_playbook(cluster, rotation_dir, "--check", "--diff", extra_vars=extra_vars)
    assert dry.returncode == 0, dry.output[-6000:]
    assert {path: read(path) for path in holders.values()} == before, "check mode changed a talosconfig"
    assert not handout.exists() and {node.name: node.config_bytes() for node in cluster.nodes} == configs
    assert "context %s: would be reissued, roles os:reader" % cluster.name in dry.output
    assert "context auditor: would be issued, roles os:reader" in dry.output

    run = run_playbook(cluster, rotation_dir, "--diff", "-vvv", extra_vars=extra_vars)
    assert run.returncode == 0, run.output[-6000:]
    new_ca = read(os.path.join(rotation_dir, "talos", "ca.crt"))
    for role, path in holders.items():
        context = TalosConfig.load(path).get_context(cluster.name)
        facts = _pki.describe_certificate(context.crt)
        assert facts["organization"] == [role] and _pki.is_issued_by(context.crt, new_ca), role
        assert context.endpoints == tuple(node.address for node in cluster.controlplanes)
        assert context.nodes == tuple(node.address for node in cluster.nodes)  # the user's defaults survive
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        backups = [name for name in os.listdir(tmp_path) if name.startswith(os.path.basename(path) + ".bak-")]
        assert len(backups) == 1, backups
        backup = os.path.join(tmp_path, backups[0])
        assert read(backup) == before[path] and stat.S_IMODE(os.stat(backup).st_mode) == 0o600
        assert_roles_enforced(cluster, path, [role])
        assert_refused_by_every_node(cluster, backup, new_ca)
    for name, roles in (("auditor", ["os:reader"]), ("backup-bot", ["os:etcd:backup"])):
        path = str(handout / name)
        facts = _pki.describe_certificate(TalosConfig.load(path).get_context(name).crt)
        assert facts["organization"] == roles and facts["common_name"] == name
        assert_roles_enforced(cluster, path, roles)
    # The role itself proved each one on every node (the reader refused an apply) and said what it wrote.
    assert "prove each talosconfig works on every node with exactly its roles" in run.output
    assert "context auditor: issued, roles os:reader" in run.output
    needles = private_key_needles(read(os.path.join(rotation_dir, "talos", "ca.key")), cluster.secrets.os_ca.key_pem,
                                  *(TalosConfig.load(path).get_context().key for path in holders.values()),
                                  TalosConfig.load(str(handout / "auditor")).get_context().key)
    for output in (dry.output, run.output):
        leaked = [needle for needle in needles if needle in output]
        assert not leaked, "private key material in the output"


def test_bad_credentials_requests_are_refused_before_any_change(cluster, tmp_path):
    rotation_dir = str(tmp_path / "rotation")
    configs = {node.name: node.config_bytes() for node in cluster.nodes}
    odd = user_talosconfig(cluster, tmp_path / "odd.talosconfig", "example:custom")
    for extra_vars, message in (
            ({"rotate_ca_talosconfig_users": [{"name": "x", "roles": ["os:root"], "path": str(tmp_path / "x")}]}, "os:root"),
            ({"rotate_ca_talosconfigs": [{"path": str(tmp_path / "missing")}]}, str(tmp_path / "missing")),
            ({"rotate_ca_talosconfigs": [{"path": odd}]}, "example:custom"),
            ({"rotate_ca_talosconfig_users": [{"name": "x", "roles": ["os:reader"], "path": str(tmp_path / "x"),
                                               "lifetime": 200000}]}, "outlive the CA")):
        refused = run_playbook(cluster, rotation_dir, extra_vars=extra_vars)
        assert refused.returncode != 0 and message in refused.output, refused.output[-4000:]
        assert "Traceback" not in refused.output
        assert {node.name: node.config_bytes() for node in cluster.nodes} == configs, "a node changed: %s" % message
    assert yaml.safe_load(read(odd))  # left as it was
    assert not os.path.exists(tmp_path / "x")
