"""talos_cluster_info's checks that need no node: the progress a job that starts with a later phase requires."""

import pytest

from ansible_collections.talosops.pki.plugins.module_utils._backends import cluster_info
from ansible_collections.talosops.pki.plugins.module_utils._errors import TalosPKIError

ROTATION = object()  # only its presence matters to the check


def nodes(**progress):
    return {node: {"talos": {"progress": where}} for node, where in progress.items()}


def params(**require):
    return {"require_progress": require, "rotation_dirs": {"talos": "/rotation/talos"}}


def test_a_swap_job_needs_every_node_accepted():
    problems = cluster_info._missing_progress(params(talos="accepted"), nodes(cp1="accepted", w1="pending", w2="swapped"),
                                              {"talos": ROTATION})
    assert len(problems) == 1
    assert "starts after the accept phase" in problems[0] and "w1 has not reached it (w1 is pending)" in problems[0]
    assert "run the accept phase first" in problems[0] and "cp1" not in problems[0] and "w2" not in problems[0]


def test_a_remove_job_needs_every_node_swapped():
    problems = cluster_info._missing_progress(params(talos="swapped"), nodes(cp1="accepted", w1="accepted"), {"talos": ROTATION})
    assert "cp1, w1 have not reached it" in problems[0] and "run the swap phase first" in problems[0]


def test_nodes_far_enough_pass():
    assert cluster_info._missing_progress(params(talos="swapped"), nodes(cp1="removed", w1="swapped"), {"talos": ROTATION}) == []
    assert cluster_info._missing_progress(params(talos="pending"), nodes(cp1="pending"), {"talos": None}) == []


def test_a_later_phase_without_a_rotation_is_refused():
    problems = cluster_info._missing_progress(params(talos="swapped"), nodes(cp1="pending"), {"talos": None})
    assert "no talos CA rotation is in progress in /rotation/talos" in problems[0] and "from accept on first" in problems[0]


@pytest.mark.parametrize("require", [{"etcd": "accepted"}, {"talos": "done"}])
def test_a_bad_requirement_is_refused(require):
    with pytest.raises(TalosPKIError, match="require_progress maps a CA kind"):
        cluster_info._check_required_progress_spec({"require_progress": require})
