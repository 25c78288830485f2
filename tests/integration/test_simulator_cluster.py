"""The SimCluster API and the files it writes; the `python -m talos_sim` command."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from talos_sim import SimCluster, pki
from talos_reference import reference_path  # pylint: disable=import-error
from talos_sim.testing import admin_credentials, call

VERSION = "/machine.MachineService/Version"
SIMULATOR_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "simulator")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_talosconfig(module_sim_cluster):
    cluster = module_sim_cluster
    assert mode(cluster.talosconfig_path) == 0o600
    with open(cluster.talosconfig_path, encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    assert document["context"] == cluster.name
    context = document["contexts"][cluster.name]
    assert context["endpoints"] == [node.address for node in cluster.controlplanes]
    assert context["nodes"] == [node.address for node in cluster.nodes]
    assert pki.b64decode_strict(context["ca"]) == cluster.secrets.os_ca.cert_pem
    assert pki.b64decode_strict(context["key"]).startswith(b"-----BEGIN ED25519 PRIVATE KEY-----")
    client = pki.load_certificate(pki.b64decode_strict(context["crt"]))
    assert [attr.value for attr in client.subject] == ["os:admin"]  # O=os:admin, no CN
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    credentials = ([pki.b64decode_strict(context["ca"])],
                   pki.CertKey.from_objects(client, pki.load_private_key(pki.b64decode_strict(context["key"]))))
    assert call(credentials, context["endpoints"][0], VERSION).messages


def test_secrets_bundle_has_the_gen_secrets_shape(module_sim_cluster):
    cluster = module_sim_cluster
    assert mode(cluster.secrets_path) == 0o600
    with open(cluster.secrets_path, encoding="utf-8") as handle:
        ours = yaml.safe_load(handle)
    with open(reference_path("secrets.yaml"), encoding="utf-8") as handle:
        real = yaml.safe_load(handle)

    def shape(value):
        return {key: shape(item) for key, item in value.items()} if isinstance(value, dict) else None
    assert shape(ours) == shape(real)
    labels = {name: pki.b64decode_strict(pair["key"]).splitlines()[0] for name, pair in ours["certs"].items()}
    assert labels["os"] == b"-----BEGIN ED25519 PRIVATE KEY-----"
    assert labels["k8s"] == labels["etcd"] == b"-----BEGIN EC PRIVATE KEY-----"
    os_ca = pki.load_certificate(pki.b64decode_strict(ours["certs"]["os"]["crt"]))
    assert os_ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "talos"
    assert os_ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_inventory_and_nodes_json(module_sim_cluster):
    cluster = module_sim_cluster
    with open(cluster.inventory_path, encoding="utf-8") as handle:
        inventory = yaml.safe_load(handle)["all"]
    assert inventory["vars"] == {"talos_endpoints": [node.address for node in cluster.controlplanes],
                                 "talos_talosconfig": cluster.talosconfig_path, "ansible_connection": "local",
                                 "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    for group, members in (("controlplane", cluster.controlplanes), ("worker", cluster.workers)):
        assert inventory["children"][group]["hosts"] == {
            node.name: {"talos_node_address": node.address} for node in members}
    with open(cluster.nodes_path, encoding="utf-8") as handle:
        assert json.load(handle) == [{"name": node.name, "address": node.address, "type": node.machine_type}
                                     for node in cluster.nodes]
    assert cluster.node(cluster.nodes[3].address) is cluster.node(cluster.nodes[3].name) is cluster.nodes[3]
    assert cluster.endpoint == cluster.controlplanes[0].address


def test_clusters_run_side_by_side_and_stop_cleanly(make_sim_cluster, tmp_path):
    first = make_sim_cluster(controlplanes=1, workers=1)
    second = make_sim_cluster(controlplanes=1, workers=1)
    assert first.subnet != second.subnet
    for cluster in (first, second):
        assert call(admin_credentials(cluster), cluster.endpoint, VERSION).messages
    with pytest.raises(OSError):
        SimCluster(1, 0, tmp_path / "taken", subnet=first.subnet).start()  # that /24 is in use
    with SimCluster(1, 1, tmp_path / "chosen", subnet="127.77.66") as chosen:
        assert chosen.endpoint == "127.77.66.1"
        assert call(admin_credentials(chosen), chosen.endpoint, VERSION).messages
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.77.66.1", 50000), timeout=2).close()


def test_command_line(tmp_path):
    workdir = tmp_path / "cli"
    environment = dict(os.environ, PYTHONPATH=SIMULATOR_DIR)
    process = subprocess.Popen([sys.executable, "-m", "talos_sim", "--controlplanes", "1", "--workers", "1",
                                "--workdir", str(workdir), "--talos-version", "v1.15.0"],
                               env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (workdir / "ready").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no ready marker"
            time.sleep(0.05)
        endpoint = (workdir / "ready").read_text().strip()
        with open(workdir / "talosconfig", encoding="utf-8") as handle:
            context = yaml.safe_load(handle)["contexts"]["talos-sim"]
        credentials = ([pki.b64decode_strict(context["ca"])], pki.CertKey.from_objects(
            pki.load_certificate(pki.b64decode_strict(context["crt"])),
            pki.load_private_key(pki.b64decode_strict(context["key"]))))
        assert call(credentials, endpoint, VERSION).messages[0].version.tag == "v1.15.0"
    finally:
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "Press Ctrl-C to stop." in stdout and "talosconfig" in stdout
    assert not (workdir / "ready").exists()


def declared_vips(config):
    """VIPs a config declares: Layer2VIPConfig documents (v1.12+), else machine.network.interfaces[].vip."""
    documents = [document for document in yaml.safe_load_all(config) if document]
    layer2 = [document["name"] for document in documents if document.get("kind") == "Layer2VIPConfig"]
    machine = next(document for document in documents if "machine" in document)["machine"]
    interfaces = [interface["vip"]["ip"] for interface in (machine.get("network") or {}).get("interfaces") or () if "vip" in interface]
    return layer2, interfaces


@pytest.mark.parametrize("talos_version", ["v1.13.4", "v1.11.5"])
def test_a_shared_virtual_ip_is_declared_held_by_the_first_control_plane_and_listed_first(make_sim_cluster, talos_version):
    cluster = make_sim_cluster(controlplanes=2, workers=1, vip=True, talos_version=talos_version)
    holder = cluster.controlplanes[0]
    assert cluster.vip == cluster.subnet + ".253"
    expected = ([cluster.vip], []) if talos_version == "v1.13.4" else ([], [cluster.vip])
    for node in cluster.controlplanes:
        assert declared_vips(node.config_bytes()) == expected
    assert declared_vips(cluster.workers[0].config_bytes()) == ([], [])
    # The VIP answers as its holder, directly and through another node's apid.
    credentials = admin_credentials(cluster)
    assert call(credentials, cluster.vip, VERSION).messages  # its server certificate names the VIP
    assert call(credentials, cluster.controlplanes[1].address, VERSION, node=cluster.vip).messages
    assert holder.is_local_target(cluster.vip) and not cluster.controlplanes[1].is_local_target(cluster.vip)
    assert holder.member_addresses == [cluster.vip, holder.address]
    assert cluster.controlplanes[1].member_addresses == [cluster.controlplanes[1].address]
