"""talosops.pki.talos inventory plugin against simulated 3 + 3 clusters: ansible-inventory and ansible-playbook as users run them."""

import ipaddress
import json
import os
import subprocess
import sys
import types

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from jinja2.sandbox import ImmutableSandboxedEnvironment

from _playbook import node_ca_fields, pem_to_der, run_playbook

from ansible_collections.talosops.pki.plugins.module_utils._talos_api_pb import message_class
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import TalosConfig

ANSIBLE_INVENTORY = os.path.join(os.path.dirname(sys.executable), "ansible-inventory")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CREDENTIAL_TYPE = os.path.join(REPO_ROOT, "docs", "awx", "credential-type.yml")
MEMBERS = ("cluster", "Members.cluster.talos.dev")
MACHINE_TYPES = {"controlplane": 2, "worker": 3}


def write_inventory(directory, cluster, **options):
    """<directory>/cluster.talos.yml for `cluster`; options are added to the plugin configuration (None drops one)."""
    config = {"plugin": "talosops.pki.talos", "talosconfig": cluster.talosconfig_path}
    config.update(options)
    config = {key: value for key, value in config.items() if value is not None}
    path = os.path.join(str(directory), "cluster.talos.yml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config, handle)
    return path


def plain(value):
    """ansible-inventory's JSON marks untrusted strings as {"__ansible_unsafe": ...}: unwrap them."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def ansible_inventory(path, *args, check=True):
    # A source that fails to parse is only a warning by default: make it an error, as the plugin's notes advise.
    env = dict(os.environ, ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="true", ANSIBLE_NOCOLOR="1")
    completed = subprocess.run([ANSIBLE_INVENTORY, "-i", path, "--list", "--export"] + list(args), env=env,
                               capture_output=True, text=True, timeout=300, check=False)
    if check:
        assert completed.returncode == 0, completed.stderr[-4000:]
        return plain(json.loads(completed.stdout)), completed.stderr
    return completed


def node_addresses(inventory):
    return {name: host["talos_node_address"] for name, host in inventory["_meta"]["hostvars"].items()}


def sim_inventory(cluster):
    """The hand-written inventory the simulator writes: the reference the plugin's result must match."""
    with open(cluster.inventory_path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def awx_inject(credential_inputs, job_dir):
    """What AWX does with docs/awx/credential-type.yml for one job or inventory sync: the environment it sets.

    Same rendering as AWX (awx/main/models/credential: a Jinja2 ImmutableSandboxedEnvironment, file
    injectors written 0600, their paths under tower.filename); absent inputs are left undefined.
    """
    with open(CREDENTIAL_TYPE, encoding="utf-8") as handle:
        definition = yaml.safe_load(handle)
    field_ids = [field["id"] for field in definition["inputs"]["fields"]]
    assert set(definition["inputs"]["required"]) <= set(field_ids)
    namespace = {key: value for key, value in credential_inputs.items() if value}
    sandbox = ImmutableSandboxedEnvironment()
    files = {}
    os.makedirs(job_dir, exist_ok=True)
    for label, template in definition["injectors"]["file"].items():
        path = os.path.join(job_dir, "tmp" + label.replace(".", "_"))
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(sandbox.from_string(template).render(**namespace))
        os.chmod(path, 0o600)
        files[label.split(".")[1]] = path
    namespace["tower"] = types.SimpleNamespace(filename=types.SimpleNamespace(**files))
    return {name: sandbox.from_string(template).render(**namespace) for name, template in definition["injectors"]["env"].items()}


def publish_members(cluster, addresses_by_node):
    """Make every node's Members list the given addresses for some nodes (e.g. a VIP next to their own).

    The simulator publishes one address per member; a VIP listed by members is built here, on the
    cluster's loop, in the wire shape Talos uses (MemberSpec with NetIP addresses).
    """
    netip = message_class("common.NetIP")

    def spec(node, addresses):
        return message_class("talos.resource.definitions.cluster.MemberSpec")(
            node_id=node.node_id, addresses=[netip(ip=ipaddress.ip_address(address).packed) for address in addresses],
            hostname=node.name, machine_type=MACHINE_TYPES[node.machine_type],
            operating_system="Talos (%s)" % node.talos_version).SerializeToString()

    async def publish():
        for viewer in cluster.nodes:
            for node in cluster.nodes:
                if node.name in addresses_by_node:
                    viewer.resources.put(MEMBERS, node.name, spec(node, addresses_by_node[node.name]),
                                         owner="cluster.MemberController")

    cluster.run(publish())


@pytest.fixture(name="cluster")
def fixture_cluster(make_sim_cluster):
    return make_sim_cluster(controlplanes=3, workers=3)


def test_inventory_matches_the_cluster(cluster, tmp_path):
    inventory, _stderr = ansible_inventory(write_inventory(tmp_path, cluster))
    expected = sim_inventory(cluster)["all"]["children"]
    assert len(cluster.controlplanes) == 3 and len(cluster.workers) == 3
    for group in ("controlplane", "worker"):
        assert inventory[group]["hosts"] == list(expected[group]["hosts"])
    assert node_addresses(inventory) == {node.name: node.address for node in cluster.nodes}
    host = inventory["_meta"]["hostvars"][cluster.workers[0].name]
    assert host["talos_machine_type"] == "worker"
    assert host["talos_member_addresses"] == [cluster.workers[0].address]
    assert host["talos_operating_system"] == "Talos (v1.13.4)"
    group_vars = inventory["all"]["vars"]
    assert group_vars["talos_endpoints"] == [node.address for node in cluster.controlplanes]
    assert group_vars["talos_talosconfig"] == cluster.talosconfig_path
    assert group_vars["talos_context"] == "talos-sim"
    assert group_vars["ansible_connection"] == "local"


def test_kubernetes_discovery_is_completed_from_a_worker(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=3, workers=3, split_members=True)
    # The talosconfig context lists every node: the workers' view is read through the endpoint and merged.
    inventory, stderr = ansible_inventory(write_inventory(tmp_path, cluster))
    assert sorted(inventory["worker"]["hosts"]) == sorted(node.name for node in cluster.workers)
    assert node_addresses(inventory) == {node.name: node.address for node in cluster.nodes}
    assert "10145" not in stderr

    # Nobody to ask: only the control planes are found, and the warning says why and what to do.
    inventory, stderr = ansible_inventory(write_inventory(tmp_path, cluster, discovery_nodes=[]))
    assert "worker" not in inventory or not inventory["worker"].get("hosts")
    assert sorted(inventory["controlplane"]["hosts"]) == sorted(node.name for node in cluster.controlplanes)
    assert "siderolabs/talos#10145" in " ".join(stderr.split())


def test_a_vip_listed_by_members_is_never_a_node_address(cluster, tmp_path):
    vip = "%s.200" % cluster.subnet
    first, second, third = cluster.controlplanes
    # Both VIP holders list the VIP first, as in siderolabs/talos#10357 and #10145.
    publish_members(cluster, {first.name: [vip, first.address], second.name: [vip, second.address]})
    inventory, stderr = ansible_inventory(write_inventory(tmp_path, cluster))
    assert node_addresses(inventory) == {node.name: node.address for node in cluster.nodes}
    assert inventory["_meta"]["hostvars"][first.name]["talos_member_addresses"] == [vip, first.address]
    assert vip not in inventory["all"]["vars"]["talos_endpoints"]
    assert "Failed to parse" not in stderr

    # A control plane left with only VIPs fails the inventory, naming the node and the fix.
    failed = ansible_inventory(write_inventory(tmp_path, cluster, vips=[third.address]), check=False)
    assert failed.returncode != 0
    message = " ".join(failed.stderr.split())
    assert "cluster member %s lists only virtual IPs: %s (declared a virtual IP in vips" % (third.name, third.address) in message
    assert "Pin its address in the inventory option addresses" in message


def test_cache_serves_the_second_run_and_flush_cache_asks_the_cluster(cluster, tmp_path):
    cache_dir = tmp_path / "cache"
    path = write_inventory(tmp_path, cluster, cache=True, cache_plugin="ansible.builtin.jsonfile",
                           cache_connection=str(cache_dir), cache_timeout=3600, retry_deadline=1.0)
    first, _stderr = ansible_inventory(path)
    [cache_file] = [cache_dir / name for name in os.listdir(cache_dir)]
    written = os.stat(cache_file).st_mtime_ns
    cached_text = cache_file.read_text()
    assert cluster.workers[0].address in cached_text

    for node in cluster.controlplanes:
        node.down()  # no endpoint answers any more
    try:
        second, _stderr = ansible_inventory(path)
        assert second == first
        # A hit is not written back, so it does not extend the cache's lifetime.
        assert os.stat(cache_file).st_mtime_ns == written
        refused = ansible_inventory(path, "--flush-cache", check=False)
        assert refused.returncode != 0
        assert "got no answer" in refused.stderr
    finally:
        for node in cluster.controlplanes:
            node.up()

    refreshed, _stderr = ansible_inventory(path, "--flush-cache")
    assert refreshed == first
    assert os.stat(cache_file).st_mtime_ns != written


def test_playbook_rotates_the_cluster_with_the_plugin_inventory(cluster, tmp_path):
    rotation_dir = str(tmp_path / "rotation")
    old_ca = node_ca_fields(cluster.nodes[0])[0]
    # The trap of siderolabs/talos#10357 set: two control planes list a VIP first.
    vip = "%s.200" % cluster.subnet
    first, second, _third = cluster.controlplanes
    publish_members(cluster, {first.name: [vip, first.address], second.name: [vip, second.address]})
    path = write_inventory(tmp_path, cluster)
    # run_playbook runs ansible-playbook -i <inventory_path> playbooks/rotate_talos_ca.yml -e rotate_ca_dir=<dir>.
    run = run_playbook(types.SimpleNamespace(inventory_path=path), rotation_dir)
    assert run.returncode == 0, run.output[-6000:]
    assert set(run.recap) == {node.name for node in cluster.nodes}
    with open(os.path.join(rotation_dir, "talos", "ca.crt"), "rb") as handle:
        new_ca = pem_to_der(handle.read())
    assert new_ca != old_ca
    for node in cluster.nodes:
        issuing, accepted = node_ca_fields(node)
        assert issuing == new_ca, "%s does not issue with the new CA" % node.name
        assert old_ca not in accepted, "%s still accepts the old CA" % node.name
    # talos_talosconfig pointed the role at the cluster's talosconfig: it now trusts the new CA, and its
    # credentials (the old ones are refused by now) read the same inventory again.
    context = TalosConfig.load(cluster.talosconfig_path).get_context()
    assert new_ca in [certificate.public_bytes(Encoding.DER) for certificate in x509.load_pem_x509_certificates(context.ca)]
    inventory, _stderr = ansible_inventory(path)
    assert node_addresses(inventory) == {node.name: node.address for node in cluster.nodes}


def test_awx_credential_type_feeds_the_inventory_and_the_rotation(cluster, tmp_path, monkeypatch):
    with open(cluster.talosconfig_path, encoding="utf-8") as handle:
        talosconfig = handle.read()
    # No ~/.talos/config to fall back on: what is found comes from the credential.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    # An AWX inventory source file names no talosconfig: the credential provides it.
    path = write_inventory(tmp_path, cluster, talosconfig=None)

    sync_env = awx_inject({"talosconfig": talosconfig, "context": ""}, str(tmp_path / "sync"))
    assert sync_env["TALOSOPS_CONTEXT"] == ""
    for name, value in sync_env.items():
        monkeypatch.setenv(name, value)
    inventory, _stderr = ansible_inventory(path)
    assert node_addresses(inventory) == {node.name: node.address for node in cluster.nodes}
    # Null, so that a job finds its own copy through TALOSCONFIG: the sync's file is gone by then.
    assert inventory["all"]["vars"]["talos_talosconfig"] is None
    assert inventory["all"]["vars"]["talos_context"] == "talos-sim"

    monkeypatch.setenv("TALOSOPS_CONTEXT", "staging")
    refused = ansible_inventory(path, check=False)
    assert refused.returncode != 0
    assert "context staging not found in %s; available: talos-sim" % sync_env["TALOSCONFIG"] in " ".join(refused.stderr.split())

    # The job: a fresh copy of the credential, found through TALOSCONFIG by the role.
    job_env = awx_inject({"talosconfig": talosconfig, "context": "talos-sim"}, str(tmp_path / "job"))
    assert job_env["TALOSCONFIG"] != sync_env["TALOSCONFIG"]
    for name, value in job_env.items():
        monkeypatch.setenv(name, value)
    rotation_dir = str(tmp_path / "rotation")
    run = run_playbook(types.SimpleNamespace(inventory_path=path), rotation_dir)
    assert run.returncode == 0, run.output[-6000:]
    with open(os.path.join(rotation_dir, "talos", "ca.crt"), "rb") as handle:
        new_ca = pem_to_der(handle.read())
    assert all(node_ca_fields(node)[0] == new_ca for node in cluster.nodes)
    # The new credentials went to the job's copy, as docs/awx/README.md says; the cluster's own file is untouched.
    job_context = TalosConfig.load(job_env["TALOSCONFIG"]).get_context()
    assert new_ca in [certificate.public_bytes(Encoding.DER) for certificate in x509.load_pem_x509_certificates(job_context.ca)]
    with open(cluster.talosconfig_path, encoding="utf-8") as handle:
        assert handle.read() == talosconfig
