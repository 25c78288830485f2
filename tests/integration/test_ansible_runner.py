"""The Talos API CA rotation run as AWX runs it: `ansible-runner run` jobs on AWX-shaped private_data_dirs.

Each job gets a fresh private_data_dir (see _runner.py) whose talosconfig is the AWX credential's content, injected
as a file named by TALOSCONFIG; the rotation directory lives outside every private_data_dir, like a volume.
"""

import base64
import json
import os


import pytest
import yaml
from ansible.parsing.vault import VaultLib, VaultSecret
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from _playbook import cluster_secret_values, lock_released, pem_to_der, private_key_needles
from _runner import artifact_texts, kill_switch_envvars, read, run_job

from ansible_collections.talosops.pki.plugins.module_utils import _client, _files
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import KIND_TALOS, MachineConfig
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import TalosConfig


@pytest.fixture(name="cluster")
def fixture_cluster(make_sim_cluster):
    return make_sim_cluster(controlplanes=3, workers=2)


def inventory_hosts(cluster, group):
    with open(cluster.inventory_path, encoding="utf-8") as handle:
        inventory = yaml.safe_load(handle)
    return list(inventory["all"]["children"][group]["hosts"])


def node_configs(cluster):
    return {node.name: node.config_bytes() for node in cluster.nodes}


def talos_ca_state(node):
    """(issuing certificate DER, {accepted DER}) of the node's Talos API CA, read with the collection's MachineConfig."""
    fields = MachineConfig.parse(node.config_bytes(), node.name).get_ca(KIND_TALOS)
    return pem_to_der(fields.issuing_crt), {pem_to_der(pem) for pem in fields.accepted}


VAULT_PASSWORD = "the vault password of the AWX Vault credential"


def vault_readable():
    """A sealing that reads what the job encrypted with the Vault credential's password, and writes nothing."""
    vault = VaultLib([("default", VaultSecret(VAULT_PASSWORD.encode()))])
    return _files.Sealing(None, None, vault.decrypt)


def rotation_file(rotation_dir, name):
    return _files.read_bytes(os.path.join(rotation_dir, "talos", name), name, sealing=vault_readable())


def new_ca(rotation_dir):
    """(DER, SHA-256 fingerprint recorded in rotation.json) of the rotation's new CA (read in clear if encrypted)."""
    state = json.loads(rotation_file(rotation_dir, "rotation.json"))
    return pem_to_der(rotation_file(rotation_dir, "ca.crt")), state["ca_fingerprint"]


def assert_nodes_at(cluster, issuing, accepts):
    """Every node issues with `issuing` and also accepts each CA of `accepts`."""
    for node in cluster.nodes:
        node_issuing, node_accepted = talos_ca_state(node)
        assert node_issuing == issuing, "%s does not issue with the expected CA" % node.name
        for der in accepts:
            assert der in node_accepted, "%s does not accept an expected CA" % node.name


def assert_rotated_to(cluster, new_der, old_der):
    """Every node issues with the new CA and trusts nothing else."""
    for node in cluster.nodes:
        issuing, accepted = talos_ca_state(node)
        assert issuing == new_der, "%s does not issue with the new CA" % node.name
        assert accepted <= {new_der}, "%s still accepts another CA (old one: %s)" % (node.name, old_der in accepted)


async def _version(address, creds):
    async with _client.TalosClient([address], creds, retry_deadline=2.0) as client:
        return await client.version()


def assert_talosconfig_holds_new_credentials(cluster, talosconfig_path, new_der, old_key):
    """The file works on every node, trusts the new CA and holds a client certificate the new CA issued."""
    context = TalosConfig.load(talosconfig_path).get_context()
    assert context.key != old_key, "%s still holds the old admin key" % talosconfig_path
    ca = x509.load_der_x509_certificate(new_der)
    x509.load_pem_x509_certificate(context.crt).verify_directly_issued_by(ca)
    assert new_der in [cert.public_bytes(Encoding.DER) for cert in x509.load_pem_x509_certificates(context.ca)]
    creds = _client.Credentials(ca=context.ca, crt=context.crt, key=context.key)
    for node in cluster.nodes:
        assert _client.run(_version(node.address, creds))["tag"], node.name


def private_keys(cluster, rotation_dir, *talosconfigs):
    """Every private key of the cluster's secrets bundle, the rotation's new CA key and the talosconfigs' client keys."""
    with open(cluster.secrets_path, encoding="utf-8") as handle:
        certs = yaml.safe_load(handle)["certs"]
    keys = [base64.b64decode(entry["key"]) for entry in certs.values() if entry.get("key")]
    for path in talosconfigs + (os.path.join(rotation_dir, "talos", "talosconfig"),
                                os.path.join(rotation_dir, "talos", "previous-talosconfig")):
        if os.path.exists(path):
            keys.append(TalosConfig.load(path, sealing=vault_readable()).get_context().key)
    ca_key = os.path.join(rotation_dir, "talos", "ca.key")
    if os.path.exists(ca_key):
        keys.append(rotation_file(rotation_dir, "ca.key"))
    return keys


def assert_no_private_key_in_artifacts(jobs, keys, secrets=()):
    """No private key, and none of `secrets` (a cluster's tokens and secrets), in any artifact of the jobs."""
    needles = private_key_needles(*keys) | set(secrets)
    assert len(keys) >= 4 and len(needles) > 20, "too few needles for the search to mean anything"
    searched = 0
    for job in jobs:
        for path, text in artifact_texts(job.private_data_dir).items():
            searched += 1
            leaked = sorted(needle for needle in needles if needle in text)
            assert not leaked, "private key material or cluster secrets in %s" % os.path.relpath(path, job.private_data_dir)
    assert searched >= 4 * len(jobs), "the jobs left almost no artifacts"


def assert_refusal_names_swap(job):
    """The job failed on a task whose message names the swap phase (the nodes have not swapped)."""
    messages = [str(result.get("msg", "")) for _task, _host, result in job.failures()]
    assert messages, job.explain()
    assert any("swap" in message.lower() for message in messages), "the refusal does not name the swap phase: %s" % messages


def test_awx_check_job_changes_nothing_then_rotation_job_updates_injected_talosconfig_without_leaking_keys(cluster, tmp_path):
    rotation_dir = str(tmp_path / "volume" / "rotation")
    credential = read(cluster.talosconfig_path)
    old_key = TalosConfig.load(cluster.talosconfig_path).get_context().key
    old_der = talos_ca_state(cluster.nodes[0])[0]
    configs = node_configs(cluster)

    check = run_job(tmp_path / "job-check", cluster, rotation_dir, credential, cmdline="--check --diff")
    assert check.returncode == 0 and check.status == "successful", check.explain()
    assert node_configs(cluster) == configs
    assert read(check.talosconfig_path) == credential
    assert not os.path.exists(rotation_dir)
    assert "check mode: nothing was changed" in check.stdout

    rotation = run_job(tmp_path / "job-rotate", cluster, rotation_dir, credential, ident="2", cmdline="--diff -vvv")
    assert rotation.returncode == 0 and rotation.status == "successful", rotation.explain()
    new_der, fingerprint = new_ca(rotation_dir)
    assert new_der != old_der and fingerprint in rotation.stdout
    assert_rotated_to(cluster, new_der, old_der)
    assert_talosconfig_holds_new_credentials(cluster, rotation.talosconfig_path, new_der, old_key)
    assert os.stat(rotation.talosconfig_path).st_mode & 0o777 == 0o600

    keys = private_keys(cluster, rotation_dir, check.talosconfig_path, rotation.talosconfig_path)
    assert old_key in keys and TalosConfig.load(rotation.talosconfig_path).get_context().key in keys
    # The check job's events hold each node's dry-run diff, whose context lines quote tokens and cluster secrets.
    assert "Config diff" in "".join(artifact_texts(check.private_data_dir).values())
    assert_no_private_key_in_artifacts([check, rotation], keys, cluster_secret_values(cluster))


def test_awx_job_killed_after_accept_is_finished_by_a_fresh_job_with_the_same_encrypted_ca(cluster, tmp_path):
    rotation_dir = str(tmp_path / "volume" / "rotation")
    credential = read(cluster.talosconfig_path)
    old_key = TalosConfig.load(cluster.talosconfig_path).get_context().key
    old_der = talos_ca_state(cluster.nodes[0])[0]
    first_controlplane = inventory_hosts(cluster, "controlplane")[0]
    # The job template's Vault credential: AWX answers the vault password prompt; nothing is written in clear.
    vault = {"cmdline": "--ask-vault-pass", "passwords": {r"^Vault password:\s*?$": VAULT_PASSWORD},
             "extravars": {"rotate_ca_encrypt": "always"}}

    # The verification that follows the accept phase runs once, reported on the play's first host.
    killed = run_job(tmp_path / "job-1", cluster, rotation_dir, credential, ident="1", **vault,
                     envvars=kill_switch_envvars("Verify | new client certificate, old or new server CA@%s" % first_controlplane))
    # ansible-runner 2.4 exits 0 when ansible-playbook dies by a signal (its rc is None); the job status says failed.
    assert killed.status == "failed", killed.explain()
    assert "PLAY RECAP" not in killed.stdout, killed.explain()
    killed_der, killed_fingerprint = new_ca(rotation_dir)
    assert_nodes_at(cluster, issuing=old_der, accepts=[killed_der])
    ca_crt = rotation_file(rotation_dir, "ca.crt")
    assert lock_released(rotation_dir)
    stored = {}
    for folder, _dirs, names in os.walk(rotation_dir):
        for name in names:
            stored[name] = read(os.path.join(folder, name))
    assert {"ca.key", "talosconfig", "previous-talosconfig", "rotation.json", "audit.jsonl"} <= set(stored)
    for name, data in stored.items():
        if name == "audit.jsonl":
            assert all(list(json.loads(line)) == ["vault"] for line in data.splitlines()), data[:200]
        else:
            assert data.startswith(b"$ANSIBLE_VAULT;1.1;AES256"), "%s is stored in clear" % name

    # Without the vault password, a resuming job is refused before any change, and says what to give.
    configs = node_configs(cluster)
    no_vault = run_job(tmp_path / "job-no-vault", cluster, rotation_dir, credential, ident="2")
    assert no_vault.status == "failed" and "give the vault password" in no_vault.stdout, no_vault.explain()
    assert node_configs(cluster) == configs

    # AWX: a new job, a new private_data_dir, the credential still holding the pre-rotation talosconfig.
    resumed = run_job(tmp_path / "job-2", cluster, rotation_dir, credential, ident="3", **vault)
    assert resumed.returncode == 0 and resumed.status == "successful", resumed.explain()
    assert rotation_file(rotation_dir, "ca.crt") == ca_crt
    assert new_ca(rotation_dir) == (killed_der, killed_fingerprint)
    assert_rotated_to(cluster, killed_der, old_der)
    assert_talosconfig_holds_new_credentials(cluster, resumed.talosconfig_path, killed_der, old_key)
    assert_no_private_key_in_artifacts([killed, resumed], private_keys(cluster, rotation_dir, resumed.talosconfig_path))


def test_awx_jobs_accept_then_swap_then_remove_complete_a_rotation(cluster, tmp_path):
    rotation_dir = str(tmp_path / "volume" / "rotation")
    credential = read(cluster.talosconfig_path)
    old_key = TalosConfig.load(cluster.talosconfig_path).get_context().key
    old_der = talos_ca_state(cluster.nodes[0])[0]

    accept = run_job(tmp_path / "job-accept", cluster, rotation_dir, credential, ident="1", extravars={"rotate_ca_phases": ["accept"]})
    assert accept.returncode == 0 and accept.status == "successful", accept.explain()
    new_der, fingerprint = new_ca(rotation_dir)
    assert_nodes_at(cluster, issuing=old_der, accepts=[new_der])

    # Every node has accepted, none has swapped: a job starting at remove is refused before it patches anything.
    accepted_configs = node_configs(cluster)
    early_remove = run_job(tmp_path / "job-early-remove", cluster, rotation_dir, credential, ident="2",
                           extravars={"rotate_ca_phases": ["remove"]})
    assert early_remove.status == "failed" and early_remove.returncode != 0, early_remove.explain()
    assert_refusal_names_swap(early_remove)
    assert node_configs(cluster) == accepted_configs

    swap = run_job(tmp_path / "job-swap", cluster, rotation_dir, credential, ident="3", extravars={"rotate_ca_phases": ["swap"]})
    assert swap.returncode == 0 and swap.status == "successful", swap.explain()
    assert new_ca(rotation_dir) == (new_der, fingerprint)
    assert_nodes_at(cluster, issuing=new_der, accepts=[old_der])

    remove = run_job(tmp_path / "job-remove", cluster, rotation_dir, credential, ident="4", extravars={"rotate_ca_phases": ["remove"]})
    assert remove.returncode == 0 and remove.status == "successful", remove.explain()
    assert new_ca(rotation_dir) == (new_der, fingerprint)
    assert_rotated_to(cluster, new_der, old_der)
    assert_talosconfig_holds_new_credentials(cluster, remove.talosconfig_path, new_der, old_key)


def test_awx_remove_only_job_on_a_cluster_that_has_not_swapped_is_refused_before_any_change(cluster, tmp_path):
    rotation_dir = str(tmp_path / "volume" / "rotation")
    configs = node_configs(cluster)

    remove = run_job(tmp_path / "job-remove", cluster, rotation_dir, read(cluster.talosconfig_path),
                     extravars={"rotate_ca_phases": ["remove"]})
    assert remove.returncode != 0 and remove.status == "failed", remove.explain()
    assert node_configs(cluster) == configs
    assert_refusal_names_swap(remove)
