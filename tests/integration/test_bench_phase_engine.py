"""The phase-engine benchmarks run and print their lines (their smallest mode), so they do not rot.

Nothing here asserts a timing: the numbers are for bench/phase_engine.py to print, PASS or MISS.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from talos_sim import pki

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "bench")


def _bench(script, *args, timeout=300):
    run = subprocess.run([sys.executable, os.path.join(BENCH, script)] + list(args), capture_output=True, text=True,
                         timeout=timeout, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return run.stdout


def _fingerprints(pems):
    return {pki.fingerprint(pki.load_certificate(pem)) for pem in pems}


@pytest.mark.parametrize("flow", ["talos", "kubernetes"])
def test_baseline_rotates_every_node_one_at_a_time(make_sim_cluster, flow):
    cluster = make_sim_cluster(controlplanes=1, workers=1, apply_delay=0.05, kubelet_restart_delay=0.05)
    old_os, old_k8s = cluster.secrets.os_ca.fingerprint, cluster.secrets.k8s_ca.fingerprint
    before = {node.name: list(node.applied_at) for node in cluster.nodes}
    output = _bench("baseline_one_node.py", "--flow", flow, "--workdir", cluster.workdir)
    result = json.loads(output.strip().splitlines()[-1])
    assert result["flow"] == flow and result["nodes"] == 2 and result["seconds"] > 0
    for step in ("accept", "swap", "remove"):
        assert re.search(r"^ +[0-9.]+ s  %s " % step, output, re.M), output
    for node in cluster.nodes:
        # accept, swap and remove: three applies per node, one after the other across the nodes
        assert len(node.applied_at) == len(before[node.name]) + 3, node.name
        if flow == "talos":
            trusted = _fingerprints(node.client_trust_pems)
            assert old_os not in trusted and len(trusted) == 1, node.name
        else:
            trusted = _fingerprints(node.kubernetes_pool_pems)
            assert old_k8s not in trusted and len(trusted) == 1, node.name
    first, second = cluster.nodes
    # one node at a time: the control plane's apply of each phase comes before the worker's, and the worker's
    # before the control plane's next one
    order = sorted([(moment, node.name) for node in (first, second) for moment in node.applied_at[-3:]])
    assert [name for _moment, name in order] == [first.name, second.name] * 3
    if flow == "kubernetes":
        assert all(entry["ready"] for entry in cluster.kubernetes_nodes())


def test_phase_engine_quick_prints_every_target():
    output = _bench("phase_engine.py", "--quick")
    for line in ("Talos 1 + 2 vs one node at a time", "Talos 1 + 3 vs 1 + 2", "Talos 1 + 3 peak controller memory",
                 "Kubernetes 1 + 2 vs one node at a time", "Kubernetes 1 + 2 vs the floor", "talos_verify of 3 nodes, one task"):
        assert re.search(r"^(PASS|MISS) %s +\S" % re.escape(line), output, re.M), (line, output)
    assert re.search(r"^  floor = 3 phases x \(1 control-plane waves", output, re.M), output
    memory = re.search(r"peak controller memory +(\d+) MiB RSS \(PSS (\d+) MiB\)", output)
    assert memory and int(memory.group(1)) >= int(memory.group(2)) > 0, output
    assert "FAILED run" not in output and "load average" in output
