"""talos_cluster_info's refusal: problems first, nodes by inventory name and address, details without certificates."""

from ansible_collections.talosops.pki.plugins.module_utils._backends import cluster_info

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_nodes_are_named_by_inventory_name_and_address():
    label = cluster_info._labeller({"10.5.0.2": "cp-1", "10.5.0.5": "10.5.0.5"})
    assert label("10.5.0.2") == "cp-1 (10.5.0.2)"
    assert label("10.5.0.5") == "10.5.0.5"  # an inventory named by address is not named twice
    assert label("10.5.0.9") == "10.5.0.9"


def test_problems_name_the_nodes_through_the_labeller():
    nodes = {"10.5.0.5": {"machine_type": "worker", "talos_version": "v1.13.4", "talos": {}, "kubernetes": {}}}
    problems = cluster_info._check({"nodes": nodes, "members": [], "issuing_ca": {}},
                                   {"controlplanes": ["10.5.0.5"], "workers": [], "require_progress": {}},
                                   {}, cluster_info._labeller({"10.5.0.5": "w-1"}))
    assert problems == ["w-1 (10.5.0.5) is listed under controlplane but its machine.type is worker: move it to the worker group."]


def test_the_refusal_leads_with_the_problems_and_keeps_details_without_pems():
    result = {"nodes": {"10.5.0.2": {"hostname": "cp-1"}}, "members": [], "stray_cas": {}, "endpoints": ["10.5.0.2"],
              "issuing_ca": {"talos": {"crt": PEM, "fingerprint": "ab" * 32}}, "warnings": ["w"], "talosconfig": "/t"}
    refused = cluster_info.refusal(["first problem: do this.", "second problem: do that."], result)
    assert refused["failed"] and not refused["changed"]
    assert refused["msg"] == ("preflight refused the rotation before any change (2 problems): first problem: do this. "
                              "second problem: do that.")
    assert refused["problems"] == ["first problem: do this.", "second problem: do that."]
    assert refused["details"]["issuing_ca"] == {"talos": {"fingerprint": "ab" * 32}}
    assert "BEGIN CERTIFICATE" not in repr(refused) and refused["warnings"] == ["w"]


def test_a_missing_hostname_comes_from_the_member_listing_the_address_or_is_left_out():
    cluster = {"members": [{"hostname": "cp-1", "addresses": ["10.5.0.2"]}],
               "nodes": {"10.5.0.2": {"hostname": None}, "10.5.0.9": {"hostname": None}, "10.5.0.3": {"hostname": "own"}}}
    cluster_info._name_nodes(cluster)
    assert cluster["nodes"] == {"10.5.0.2": {"hostname": "cp-1"}, "10.5.0.9": {}, "10.5.0.3": {"hostname": "own"}}
