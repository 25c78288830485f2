"""Fleet runs with an existing engine: one cluster per job, each with its own inventory and rotation folder, run in
parallel locally (xargs -P, as docs/fleet.md shows); and the role refuses an inventory that mixes two clusters' nodes,
before any change, naming them."""

import os
import subprocess

import yaml

from _playbook import ANSIBLE_PLAYBOOK, PLAYBOOK, run_playbook
from _talos_state import assert_credentials, assert_rotated, old_ca_der_of


def mixed_inventory(first, second, path):
    """The first cluster's inventory with the second cluster's nodes added to its groups, as a careless merge does."""
    with open(first.inventory_path, encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    with open(second.inventory_path, encoding="utf-8") as handle:
        other = yaml.safe_load(handle)
    for group in ("controlplane", "worker"):
        document["all"]["children"][group]["hosts"].update(other["all"]["children"][group]["hosts"])
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(path)


def test_an_inventory_mixing_two_clusters_is_refused_before_any_change(make_sim_cluster, tmp_path):
    alpha = make_sim_cluster(controlplanes=1, workers=1, name="alpha")
    beta = make_sim_cluster(controlplanes=1, workers=1, name="beta")
    configs = {node.address: node.config_bytes() for cluster in (alpha, beta) for node in cluster.nodes}
    rotation_dir = str(tmp_path / "rotation")

    run = run_playbook(alpha, rotation_dir, inventory=mixed_inventory(alpha, beta, tmp_path / "mixed.yml"))
    assert run.returncode != 0, run.output[-4000:]
    flat = " ".join(run.output.split())
    assert "the inventory mixes nodes of different clusters" in flat, run.output[-4000:]
    foreign = ", ".join("%s (%s)" % (node.name, node.address) for node in beta.nodes)
    assert "%s are not members of the cluster behind endpoint %s" % (foreign, alpha.endpoint) in flat, run.output[-4000:]
    assert "alpha-controlplane-1 (%s)" % alpha.nodes[0].address in flat
    assert "Traceback" not in run.output
    assert {node.address: node.config_bytes() for cluster in (alpha, beta) for node in cluster.nodes} == configs
    assert not os.path.exists(os.path.join(rotation_dir, "talos", "ca.key"))


def test_a_fleet_rotates_one_cluster_per_job_in_parallel(make_sim_cluster, tmp_path):
    """What docs/fleet.md tells to do without AWX: one ansible-playbook per cluster, fanned out by xargs -P."""
    clusters = [make_sim_cluster(controlplanes=1, workers=1, name="fleet-%d" % index) for index in range(2)]
    old = {cluster.name: old_ca_der_of(cluster) for cluster in clusters}
    listing = tmp_path / "clusters.txt"
    listing.write_text("".join("%s\n" % cluster.workdir for cluster in clusters))
    # Each cluster: its own inventory and its own rotation folder, next to each other.
    script = ('"$0" -i "$1/inventory.yml" "$2" -e rotate_ca_dir="$1/rotation" > "$1/rotation.log" 2>&1')
    completed = subprocess.run(["xargs", "-P", "2", "-I", "{}", "sh", "-c", script, ANSIBLE_PLAYBOOK, "{}", PLAYBOOK],
                               stdin=listing.open(), env=dict(os.environ, ANSIBLE_NOCOLOR="1"), capture_output=True,
                               text=True, timeout=900, check=False)
    logs = {cluster.name: open(os.path.join(cluster.workdir, "rotation.log"), encoding="utf-8").read() for cluster in clusters}
    assert completed.returncode == 0, {name: log[-3000:] for name, log in logs.items()}
    for cluster in clusters:
        assert_rotated(cluster, os.path.join(cluster.workdir, "rotation"), old[cluster.name])
        assert_credentials(cluster, cluster.talosconfig_path, works=True)
    assert old["fleet-0"] != old["fleet-1"]
