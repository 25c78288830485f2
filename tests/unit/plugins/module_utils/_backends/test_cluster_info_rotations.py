"""talos_cluster_info: one rotation per cluster (markers on the nodes), and whose credentials the preflight prefers."""

from ansible_collections.talosops.pki.plugins.module_utils import _claim, _pki, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._backends import ca_generate, cluster_info


def generate(path, previous_crt):
    params = {name: spec.get("default") for name, spec in ca_generate.ARGUMENT_SPEC.items()}
    params.update(path=str(path), previous_ca=previous_crt.decode())
    return ca_generate.run(params)


def nodes_holding(issuing, *accepted):
    return {"10.5.0.%d" % number: {"talos": {"issuing_ca": issuing, "accepted_cas": list(accepted)}} for number in (2, 3)}


def test_a_completed_rotations_talosconfig_is_not_preferred(tmp_path):
    old = _pki.generate_ca("talos")
    made = generate(tmp_path / "talos", old.crt)
    talosconfig = tmp_path / "talos" / "talosconfig"
    talosconfig.write_text("placeholder")
    assert not cluster_info._completed_rotation_holds(str(talosconfig))  # pylint: disable=protected-access
    _rotation_store.load(made["path"]).mark_completed()
    assert cluster_info._completed_rotation_holds(str(talosconfig))  # pylint: disable=protected-access
    # Not a rotation folder of ours: judged by whether the endpoint trusts it.
    assert not cluster_info._completed_rotation_holds(str(tmp_path / "elsewhere" / "talosconfig"))  # pylint: disable=protected-access


def test_another_rotation_in_progress_is_named_and_a_settled_one_is_not(tmp_path):
    old = _pki.generate_ca("talos")
    other = generate(tmp_path / "other" / "talos", old.crt)
    old_fp, other_fp = _pki.fingerprint(old.crt), other["ca_fingerprint"]
    markers = {other_fp: _pki.rotation_marker(open(other["ca_cert_path"], "rb").read())}
    check = cluster_info._other_rotations  # pylint: disable=protected-access

    # A fresh run (no rotation of its own) while the other one has reached the accept phase: refused, naming it.
    problems = check("talos", nodes_holding(old_fp, other_fp), markers, None, False)
    assert len(problems) == 1 and "10.5.0.2, 10.5.0.3 carry the talos CA %s of talosops.pki rotation %s" % (
        other_fp[:16], other["rotation_id"]) in problems[0] and "which is in progress" in problems[0]
    # Over (no node holds the CA it replaced): simply the cluster's CA.
    assert check("talos", nodes_holding(other_fp), markers, None, False) == []
    # The other rotation itself, resuming: not refused by its own CA.
    assert check("talos", nodes_holding(old_fp, other_fp), markers, _rotation_store.load(other["path"]), False) == []
    # A later rotation of the same CA lost the race to it.
    mine = generate(tmp_path / "mine" / "talos", old.crt)
    lost = check("talos", nodes_holding(old_fp, other_fp), markers, _rotation_store.load(mine["path"]), False)
    assert len(lost) == 1 and "lost the race for the cluster" in lost[0]
    # An abandoned one that issues nowhere is let through when strays are to be removed.
    assert check("talos", nodes_holding(old_fp, other_fp), markers, None, True) == []
    assert _claim.marked(open(other["ca_cert_path"], "rb").read()).fingerprint == other_fp
