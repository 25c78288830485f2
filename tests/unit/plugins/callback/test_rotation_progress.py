"""The rotation_progress callback's lines for a wave-mode talos_machine_patch result, computed from the result alone."""

from ansible_collections.talosops.pki.plugins.callback.rotation_progress import wave_lines


def node(address, name):
    return {"node": address, "name": name, "changed": True}


def wave(nodes, seconds, changed=None):
    return {"nodes": nodes, "started": 0.0, "finished": seconds, "seconds": seconds,
            "changed_nodes": nodes if changed is None else changed}


def test_each_wave_gets_a_line_with_the_nodes_done_and_the_waves_left():
    outcome = {"nodes": [node("10.5.0.%d" % index, "w%d" % index) for index in range(1, 6)],
               "waves": [wave(["10.5.0.1", "10.5.0.2"], 2.0), wave(["10.5.0.3", "10.5.0.4"], 4.0, changed=["10.5.0.3"]),
                         wave(["10.5.0.5"], 1.0)],
               "failed_nodes": []}
    lines = wave_lines("Swap | workers", outcome)
    assert lines == [
        "progress | Swap | workers: wave 1 of 3, 2 nodes in 2.0s (2 changed); 2 of 5 nodes done; about 2 more waves, ~4s",
        "progress | Swap | workers: wave 2 of 3, 2 nodes in 4.0s (1 changed); 4 of 5 nodes done; about 1 more wave, ~3s",
        "progress | Swap | workers: wave 3 of 3, 1 node in 1.0s (1 changed); 5 of 5 nodes done, none left",
    ]


def test_a_failed_wave_names_its_failed_nodes():
    outcome = {"nodes": [node("10.5.0.1", "w1")], "failed": True, "failed_nodes": ["10.5.0.2"],
               "waves": [wave(["10.5.0.1", "10.5.0.2"], 3.0, changed=["10.5.0.1"])]}
    (line,) = wave_lines("Accept | workers", outcome)
    assert line.endswith("1 of 2 nodes done; FAILED: 10.5.0.2 (see the task's message)")
