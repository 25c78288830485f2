"""talos_cluster_info's topology guard: every cluster member must be in the inventory."""

from ansible_collections.talosops.pki.plugins.module_utils._backends import cluster_info

MEMBERS = [
    {"id": "cp1", "hostname": "cp1", "addresses": ["10.5.0.2", "fd00::2"], "machine_type": "controlplane"},
    {"id": "w1", "hostname": "w1", "addresses": ["10.5.0.5"], "machine_type": "worker"},
]


def test_members_all_listed_by_any_of_their_addresses():
    assert cluster_info._members_left_out(MEMBERS, {"controlplanes": ["fd00::2"], "workers": ["10.5.0.5"]}) == []


def test_a_member_left_out_is_named_with_its_addresses_and_type():
    (problem,) = cluster_info._members_left_out(MEMBERS, {"controlplanes": ["10.5.0.2"], "workers": []})
    assert "w1 (10.5.0.5, worker)" in problem and "cp1" not in problem and "locked out" in problem
