"""A completed aggregator (front-proxy) CA rotation is recorded as such, so that rotate_ca_start_new archives it and the
next run starts a fresh rotation with a new CA, as for the Talos and Kubernetes API CAs (v1.15 shape)."""

import glob
import json
import os

from _playbook import run_playbook

from test_rotate_aggregator_ca import AGGREGATOR_ONLY, aggregator_fields


def rotation_state(rotation):
    with open(os.path.join(rotation, "aggregator", "rotation.json"), encoding="utf-8") as handle:
        return json.load(handle)


def test_a_second_rotation_with_start_new_archives_the_first_and_starts_fresh(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=1, workers=1, talos_version="v1.15.0")
    rotation = str(tmp_path / "rotation")
    first = run_playbook(cluster, rotation, extra_vars=AGGREGATOR_ONLY)
    assert first.returncode == 0, first.output[-3000:]
    first_state = rotation_state(rotation)
    # The remove run recorded the rotation as completed (no secrets file given: completion does not depend on one).
    assert first_state.get("completed"), first_state
    second = run_playbook(cluster, rotation, extra_vars=dict(AGGREGATOR_ONLY, rotate_ca_start_new=True))
    assert second.returncode == 0, second.output[-3000:]
    assert "has not completed yet, so this run resumes it" not in second.output
    archived = glob.glob(os.path.join(rotation, "aggregator.archived-*"))
    assert len(archived) == 1
    with open(os.path.join(archived[0], "rotation.json"), encoding="utf-8") as handle:
        assert json.load(handle)["ca_fingerprint"] == first_state["ca_fingerprint"]
    second_state = rotation_state(rotation)
    assert second_state["ca_fingerprint"] != first_state["ca_fingerprint"]
    assert second_state["previous_ca_fingerprint"] == first_state["ca_fingerprint"]
    assert aggregator_fields(cluster.controlplanes[0]) == (second_state["ca_fingerprint"], [])
