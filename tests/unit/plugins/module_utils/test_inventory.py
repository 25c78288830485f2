"""Inventory rules: VIPs never become node addresses, pinned addresses, and the Kubernetes-discovery merge."""

import asyncio
import ipaddress

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _inventory
from ansible_collections.talosops.pki.plugins.module_utils._errors import NodeUnreachableError
from ansible_collections.talosops.pki.plugins.module_utils._inventory import (
    NO_WORKER_NOTE,
    VIP_DECLARED,
    VIP_ENDPOINT_ONLY,
    VIP_SHARED,
    InventoryError,
    check_endpoints,
    choose_hosts,
    classify_addresses,
    endpoint_ips,
    endpoints_for,
    merge_members,
    normal_address,
    parse_pins,
    parse_vips,
    query_members,
)


def member(name, machine_type, *addresses, member_id=None):
    return {"id": member_id or name, "hostname": name, "addresses": list(addresses), "machine_type": machine_type,
            "operating_system": "Talos (v1.13.4)"}


def cluster(cp_addresses=(("10.5.0.2",), ("10.5.0.3",), ("10.5.0.4",)), worker_addresses=(("10.5.0.5",), ("10.5.0.6",))):
    members = [member("cp-%d" % (index + 1), "controlplane", *addresses) for index, addresses in enumerate(cp_addresses)]
    members += [member("w-%d" % (index + 1), "worker", *addresses) for index, addresses in enumerate(worker_addresses)]
    return members


def addresses_of(hosts):
    return {host.name: host.address for host in hosts}


PER_NODE_ENDPOINTS = ["10.5.0.2", "10.5.0.3", "10.5.0.4"]


# --- inputs --------------------------------------------------------------------------------------------

def test_parse_vips_takes_addresses_and_networks_and_names_a_bad_entry():
    assert parse_vips(["10.5.0.10", "10.5.1.0/29", "fd00::10"]) == [
        ipaddress.ip_network("10.5.0.10/32"), ipaddress.ip_network("10.5.1.0/29"), ipaddress.ip_network("fd00::10/128")]
    with pytest.raises(InventoryError, match=r"vips: 'vip\.example\.com' is not an IP address or network"):
        parse_vips(["vip.example.com"])


def test_parse_pins_normalises_and_refuses_non_ip_values():
    assert parse_pins({"cp-1": "fd00:0::2"}) == {"cp-1": "fd00::2"}
    with pytest.raises(InventoryError, match=r"addresses\.cp-1: 'cp1\.lan' is not an IP address"):
        parse_pins({"cp-1": "cp1.lan"})
    with pytest.raises(InventoryError, match="must be a mapping"):
        parse_pins(["cp-1", "10.5.0.2"])


def test_endpoint_ips_strip_ports_and_skip_dns_names():
    assert endpoint_ips(["10.5.0.2:50000", "[fd00::2]:50000", "fd00::3", "talos.example.com", "10.5.0.2"]) == [
        "10.5.0.2", "fd00::2", "fd00::3"]


# --- VIP detection -------------------------------------------------------------------------------------

def test_an_address_several_members_list_is_a_vip_even_when_listed_first():
    members = cluster(cp_addresses=(("10.5.0.10", "10.5.0.2"), ("10.5.0.10", "10.5.0.3"), ("10.5.0.4",)))
    vips = classify_addresses(members)
    assert set(vips) == {"10.5.0.10"}
    assert vips["10.5.0.10"].kind == VIP_SHARED
    assert "cp-1, cp-2" in vips["10.5.0.10"].reason
    hosts, _warnings = choose_hosts(members)
    assert addresses_of(hosts) == {"cp-1": "10.5.0.2", "cp-2": "10.5.0.3", "cp-3": "10.5.0.4", "w-1": "10.5.0.5",
                                   "w-2": "10.5.0.6"}


def test_a_declared_vip_held_by_one_member_is_never_its_address():
    # talos#10145's listing: the VIP holder lists the VIP first; only the declaration gives it away.
    members = cluster(cp_addresses=(("10.68.181.20", "10.68.181.21"), ("10.68.181.22",), ("10.68.181.23",)),
                      worker_addresses=())
    assert choose_hosts(members)[0][0].address == "10.68.181.20"  # undeclared and no endpoints: nothing tells
    hosts, _warnings = choose_hosts(members, vips=["10.68.181.20"])
    assert addresses_of(hosts)["cp-1"] == "10.68.181.21"
    assert classify_addresses(members, vips=["10.68.181.16/29"])["10.68.181.20"].kind == VIP_DECLARED


def test_a_floating_endpoint_listed_next_to_a_node_address_is_an_endpoint_only_vip():
    # The talosconfig points at the VIP (one endpoint for three control planes); its holder lists it first.
    members = cluster(cp_addresses=(("10.68.181.20", "10.68.181.21"), ("10.68.181.22",), ("10.68.181.23",)))
    vips = classify_addresses(members, endpoints=["10.68.181.20"])
    assert set(vips) == {"10.68.181.20"}
    assert vips["10.68.181.20"].kind == VIP_ENDPOINT_ONLY
    hosts, warnings = choose_hosts(members, endpoints=["10.68.181.20:50000"])
    assert addresses_of(hosts)["cp-1"] == "10.68.181.21"
    assert any("cp-1: not using 10.68.181.20" in warning and "pin it" in warning for warning in warnings)


def test_a_single_endpoint_that_is_a_nodes_only_address_is_kept():
    # `talosctl gen config` writes the first control plane as the only endpoint: that is its own address.
    members = cluster()
    hosts, warnings = choose_hosts(members, endpoints=["10.5.0.2"])
    assert addresses_of(hosts)["cp-1"] == "10.5.0.2"
    assert classify_addresses(members, endpoints=["10.5.0.2"]) == {}
    assert warnings == []


def test_with_one_endpoint_per_control_plane_the_endpoint_address_is_preferred_over_an_undeclared_vip():
    members = cluster(cp_addresses=(("10.5.0.10", "10.5.0.2"), ("10.5.0.3",), ("10.5.0.4",)))
    assert classify_addresses(members, endpoints=PER_NODE_ENDPOINTS) == {}
    hosts, warnings = choose_hosts(members, endpoints=PER_NODE_ENDPOINTS)
    assert addresses_of(hosts)["cp-1"] == "10.5.0.2"
    assert warnings == []


def test_a_member_with_only_vips_fails_naming_the_node_and_why():
    members = cluster(cp_addresses=(("10.5.0.10",), ("10.5.0.10", "10.5.0.3"), ("10.5.0.4",)))
    with pytest.raises(InventoryError) as failure:
        choose_hosts(members)
    message = str(failure.value)
    assert "cluster member cp-1 lists only virtual IPs: 10.5.0.10 (listed by several members (cp-1, cp-2)" in message
    assert "addresses (cp-1: <its own IP>)" in message


def test_a_member_without_addresses_fails_naming_it():
    members = cluster(worker_addresses=((),))
    with pytest.raises(InventoryError, match="cluster member w-1 lists no address"):
        choose_hosts(members)


def test_several_candidate_addresses_on_a_control_plane_are_reported_but_dual_stack_is_not():
    members = cluster(cp_addresses=(("10.5.0.2", "192.168.7.2"), ("10.5.0.3", "fd00::3"), ("10.5.0.4",)))
    hosts, warnings = choose_hosts(members)
    assert addresses_of(hosts)["cp-1"] == "10.5.0.2"
    assert len(warnings) == 1
    assert warnings[0].startswith("cp-1 lists several addresses (10.5.0.2, 192.168.7.2); using 10.5.0.2")


# --- pinned addresses ----------------------------------------------------------------------------------

def test_a_pinned_address_wins_and_may_override_the_endpoint_only_heuristic():
    members = cluster(cp_addresses=(("10.5.0.20", "10.5.0.2"), ("10.5.0.3",), ("10.5.0.4",)))
    # Alone, 10.5.0.2 (the only endpoint, listed next to another address) is taken for a floating address.
    assert addresses_of(choose_hosts(members, endpoints=["10.5.0.2"])[0])["cp-1"] == "10.5.0.20"
    hosts, warnings = choose_hosts(members, endpoints=["10.5.0.2"], pins={"cp-1": "10.5.0.2", "w-2": "10.5.9.6"})
    assert addresses_of(hosts)["cp-1"] == "10.5.0.2"
    assert addresses_of(hosts)["w-2"] == "10.5.9.6"
    assert warnings == []


@pytest.mark.parametrize("pins, vips, expected", [
    ({"cp-1": "10.5.0.10"}, ["10.5.0.8/29"], r"addresses\.cp-1 is 10\.5\.0\.10, which vips declares a virtual IP \(10\.5\.0\.8/29\)"),
    ({"cp-1": "10.5.0.11"}, [], r"addresses\.cp-1 is 10\.5\.0\.11, which is listed by several members \(cp-1, cp-2\)"),
    ({"cp-1": "10.5.0.3"}, [], r"addresses\.cp-1 is 10\.5\.0\.3, an address of cp-2"),
    ({"cp-9": "10.5.0.9"}, [], r"addresses names cp-9, which is not a cluster member; members: cp-1, cp-2, cp-3, w-1, w-2"),
])
def test_a_pin_that_is_a_vip_or_another_nodes_address_or_no_member_is_refused(pins, vips, expected):
    members = cluster(cp_addresses=(("10.5.0.2", "10.5.0.11"), ("10.5.0.3", "10.5.0.11"), ("10.5.0.4",)))
    with pytest.raises(InventoryError, match=expected):
        choose_hosts(members, vips=vips, pins=pins)


def test_two_hosts_pinned_to_one_address_are_refused():
    with pytest.raises(InventoryError, match=r"w-1 and w-2 would both be reached at 10\.5\.9\.9"):
        choose_hosts(cluster(), pins={"w-1": "10.5.9.9", "w-2": "10.5.9.9"})


# --- members and groups --------------------------------------------------------------------------------

def test_init_nodes_are_control_planes_first_and_hosts_sort_naturally():
    members = [member("w-10", "worker", "10.5.0.20"), member("w-9", "worker", "10.5.0.19"),
               member("cp-2", "controlplane", "10.5.0.3"), member("cp-1", "init", "10.5.0.2")]
    hosts, _warnings = choose_hosts(members)
    assert [(host.name, host.group) for host in hosts] == [
        ("cp-1", "controlplane"), ("cp-2", "controlplane"), ("w-9", "worker"), ("w-10", "worker")]
    assert endpoints_for(hosts) == ["10.5.0.2", "10.5.0.3"]
    assert endpoints_for(hosts, ["cp.example.com"]) == ["cp.example.com"]


def test_a_member_without_a_hostname_is_named_by_its_id():
    nameless = dict(member("ignored", "worker", "10.5.0.5", member_id="n8Xa2"), hostname="")
    hosts, _warnings = choose_hosts([member("cp-1", "controlplane", "10.5.0.2"), nameless])
    assert [host.name for host in hosts] == ["cp-1", "n8Xa2"]


def test_duplicate_host_names_and_unknown_machine_types_are_refused():
    with pytest.raises(InventoryError, match="two cluster members share the host name cp-1"):
        choose_hosts([member("cp-1", "controlplane", "10.5.0.2", member_id="a"),
                      member("cp-1", "controlplane", "10.5.0.3", member_id="b")])
    with pytest.raises(InventoryError, match="member x-1 has machine type 'unknown'"):
        choose_hosts([member("cp-1", "controlplane", "10.5.0.2"), member("x-1", "unknown", "10.5.0.9")])


def test_endpoints_that_are_vips_are_refused_and_dns_names_pass():
    members = cluster(cp_addresses=(("10.5.0.10", "10.5.0.2"), ("10.5.0.10", "10.5.0.3"), ("10.5.0.4",)))
    with pytest.raises(InventoryError, match="endpoints lists 10.5.0.10, which vips declares a virtual IP"):
        check_endpoints(["10.5.0.10:50000"], vips=["10.5.0.10"])
    with pytest.raises(InventoryError, match=r"endpoints lists 10\.5\.0\.10, which is listed by several members"):
        check_endpoints(["10.5.0.10"], members)
    check_endpoints(["talos.example.com", "10.5.0.2"], members, vips=["10.5.0.10"])


# --- Kubernetes discovery: merge what a control plane and a worker each see ------------------------------

def test_merge_members_unites_split_views_once_per_member():
    controlplane_view = cluster(worker_addresses=())
    worker_view = [member("w-1", "worker", "10.5.0.5"), member("w-2", "worker", "10.5.0.6")]
    merged = merge_members(controlplane_view, worker_view)
    assert [m["hostname"] for m in merged] == ["cp-1", "cp-2", "cp-3", "w-1", "w-2"]
    # The same member seen twice (discovery service: every node sees everyone) stays one, addresses united.
    again = merge_members(merged, [member("cp-1", "controlplane", "fd00::2", "10.5.0.2")])
    assert len(again) == 5
    assert again[0]["addresses"] == ["10.5.0.2", "fd00::2"]


class FakeClient:
    """members(node=None) from a table of views; records which nodes were asked."""

    def __init__(self, views, failing=()):
        self.views = views
        self.failing = set(failing)
        self.asked = []

    async def members(self, node=None):
        self.asked.append(node)
        if node in self.failing:
            raise NodeUnreachableError("node %s via endpoint 10.5.0.2:50000: List Members got no answer" % node, node=node)
        return [dict(m, addresses=list(m["addresses"])) for m in self.views[node]]


def run(coroutine):
    return asyncio.run(coroutine)


SPLIT_VIEWS = {
    None: cluster(worker_addresses=()),
    "10.5.0.5": [member("w-1", "worker", "10.5.0.5"), member("w-2", "worker", "10.5.0.6")],
    "10.5.0.6": [member("w-1", "worker", "10.5.0.5"), member("w-2", "worker", "10.5.0.6")],
}


def test_query_members_asks_a_worker_through_the_endpoint_when_the_endpoint_sees_no_worker():
    client = FakeClient(SPLIT_VIEWS)
    members, notes = run(query_members(client, ["10.5.0.2", "10.5.0.3", "10.5.0.5", "10.5.0.6"]))
    # Known control planes are skipped (they see the same part); one worker is enough.
    assert client.asked == [None, "10.5.0.5"]
    assert sorted(m["hostname"] for m in members) == ["cp-1", "cp-2", "cp-3", "w-1", "w-2"]
    assert notes == []


def test_query_members_asks_nobody_else_when_the_endpoint_sees_workers():
    client = FakeClient({None: cluster()})
    members, notes = run(query_members(client, ["10.5.0.5"]))
    assert client.asked == [None]
    assert len(members) == 5
    assert notes == []


def test_query_members_moves_past_an_unreachable_discovery_node():
    client = FakeClient(SPLIT_VIEWS, failing={"10.5.0.5"})
    members, notes = run(query_members(client, ["10.5.0.5", "10.5.0.6"]))
    assert client.asked == [None, "10.5.0.5", "10.5.0.6"]
    assert len(members) == 5
    assert len(notes) == 1
    assert notes[0].startswith("could not read the cluster members known to discovery node 10.5.0.5")


def test_query_members_warns_when_no_worker_can_be_found():
    client = FakeClient(SPLIT_VIEWS)
    members, notes = run(query_members(client, ["10.5.0.2"]))
    assert client.asked == [None]
    assert len(members) == 3
    assert notes == [NO_WORKER_NOTE]
    assert "siderolabs/talos#10145" in NO_WORKER_NOTE and "discovery_nodes" in NO_WORKER_NOTE


def test_query_members_refuses_an_empty_member_list():
    with pytest.raises(InventoryError, match="cluster discovery is probably disabled"):
        run(query_members(FakeClient({None: []})))


def test_module_exports_the_group_names_the_role_reads():
    # roles/rotate_ca/defaults/main.yml: rotate_ca_controlplane_group / rotate_ca_worker_group.
    assert (_inventory.CONTROLPLANE, _inventory.WORKER) == ("controlplane", "worker")


@pytest.mark.parametrize("text,expected", [("fd00::0:2", "fd00::2"), (" 10.5.0.2 ", "10.5.0.2"), ("cp-1.example", "cp-1.example")])
def test_normal_address_makes_equal_ips_compare_equal_and_keeps_names(text, expected):
    assert normal_address(text) == expected
