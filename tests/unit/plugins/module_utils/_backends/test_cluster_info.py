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


class Rotation:
    def __init__(self, previous, new):
        self.previous_ca_fingerprint, self.ca_fingerprint = previous, new


CURRENT, NEW, STRAY, OTHER = "c" * 64, "n" * 64, "s" * 64, "o" * 64
DESCRIBED = {fp: {"subject": "O=kubernetes", "not_after": "2036-01-01T00:00:00Z"} for fp in (CURRENT, NEW, STRAY, OTHER)}


def cluster_of(kind, endpoint_issuing, **fields):
    """fields: node -> (issuing fingerprint or None, [accepted fingerprints])."""
    return {"issuing_ca": {kind: {"fingerprint": endpoint_issuing}},
            "nodes": {node: {kind: {"issuing_ca": issuing, "accepted_cas": list(accepted)}} for node, (issuing, accepted) in fields.items()}}


def test_strays_before_a_rotation_are_the_accepted_cas_other_than_the_issuing_one():
    # A v1.14+ worker keeps the Kubernetes CA as accepted CAs only: the endpoint's issuing CA there is not a stray.
    cluster = cluster_of("kubernetes", CURRENT, cp1=(CURRENT, [STRAY]), cp2=(CURRENT, []), w1=(None, [CURRENT, STRAY]))
    found = cluster_info._stray_cas(cluster, ["kubernetes"], {"kubernetes": None}, DESCRIBED)
    assert found == {"kubernetes": [dict(DESCRIBED[STRAY], fingerprint=STRAY, nodes=["cp1", "w1"])]}


def test_strays_during_a_rotation_are_neither_its_previous_nor_its_new_ca():
    cluster = cluster_of("talos", NEW, cp1=(NEW, [STRAY, CURRENT]), w1=(CURRENT, [NEW, OTHER]))
    found = cluster_info._stray_cas(cluster, ["talos"], {"talos": Rotation(CURRENT, NEW)}, DESCRIBED)
    assert [(stray["fingerprint"], stray["nodes"]) for stray in found["talos"]] == [(OTHER, ["w1"]), (STRAY, ["cp1"])]


def test_no_strays_no_entry():
    cluster = cluster_of("talos", CURRENT, cp1=(CURRENT, []), w1=(CURRENT, []))
    assert cluster_info._stray_cas(cluster, ["talos"], {"talos": None}, DESCRIBED) == {}


@pytest.mark.parametrize("remove,says", [(False, "the rotation keeps them"), (True, "they are removed in the remove phase")])
def test_the_warning_names_the_ca_its_nodes_and_what_will_happen(remove, says):
    strays = [dict(DESCRIBED[STRAY], fingerprint=STRAY, nodes=["n%d" % i for i in range(8)])]
    warning = cluster_info._stray_warning("talos", strays, remove)
    assert STRAY[:16] in warning and "O=kubernetes, expires 2036-01-01T00:00:00Z" in warning
    assert "on n0, n1, n2, n3, n4 and 3 more" in warning and says in warning
