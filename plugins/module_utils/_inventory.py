# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""Cluster members -> inventory hosts, for the talosops.pki.talos inventory plugin.

Two upstream traps shape this file:

- Kubernetes discovery splits the member list (siderolabs/talos#10145): a control plane's
  Members lists only control planes, a worker's only workers. query_members() therefore asks
  one more node, through the endpoint with the `node` header, when the endpoint's list has no
  worker, and merges both lists.
- A member may list a virtual IP next to its own address, even first (siderolabs/talos#10357:
  `talosctl rotate-ca` picked the VIP and hung). choose_hosts() never makes a VIP a node
  address. An address is a VIP when the user declares it (option `vips`), when several members
  list it, or when it is an endpoint-only address: an endpoint that one member lists next to
  other addresses while the endpoints are not one per control plane (a floating address in
  front of the control planes). With one endpoint per control plane, Talos' recommended
  layout, each endpoint is that node's own address and is preferred.

Everything except query_members() is pure, so the rules are unit tested without a cluster.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

from ansible_collections.talosops.pki.plugins.module_utils._errors import TalosAPIError, TalosPKIError

CONTROLPLANE = "controlplane"
WORKER = "worker"
# init nodes are control planes that bootstrapped the cluster (Talos < 1.x layouts still use them).
_GROUP_OF_TYPE = {"init": CONTROLPLANE, "controlplane": CONTROLPLANE, "worker": WORKER}
# Rotation order inside the inventory: init first, then control planes, then workers (as talosctl rotate-ca).
_TYPE_ORDER = {"init": 0, "controlplane": 1, "worker": 2}

# Why an address is a VIP; a pinned address may override only the endpoint-only heuristic.
VIP_DECLARED = "declared"
VIP_SHARED = "shared"
VIP_ENDPOINT_ONLY = "endpoint-only"

NO_WORKER_NOTE = (
    "the cluster members found include no worker. With Kubernetes discovery a control plane lists only control planes "
    "(siderolabs/talos#10145): if this cluster has workers, name one in the inventory option discovery_nodes (or in the "
    "talosconfig context's nodes: talosctl config node <worker IP>) so that its member list is merged in. A cluster "
    "without workers can ignore this.")


class InventoryError(TalosPKIError):
    """The cluster's members cannot be turned into an inventory as asked."""


class Host(NamedTuple):
    """One inventory host: a cluster member and the address the rotation reaches it by."""

    name: str
    group: str
    address: str
    member: dict


class VIP(NamedTuple):
    """Why an address is treated as a virtual IP."""

    kind: str
    reason: str


# --- inputs ----------------------------------------------------------------------------------

def _ip(text):
    """The IP address in `text`, or None when it is not one (e.g. a DNS name)."""
    try:
        return ipaddress.ip_address(str(text).strip())
    except ValueError:
        return None


def normal_address(text):
    """An IP address in its canonical form (so that fd00::0:2 and fd00::2 compare equal); any other text as it is."""
    address = _ip(text)
    return str(address) if address is not None else str(text).strip()


def endpoint_host(endpoint):
    """'10.0.0.1', '10.0.0.1:50000', '[fd00::1]:50000', 'fd00::1' or 'host:50000' -> the host part."""
    text = str(endpoint).strip()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    if text.count(":") == 1:
        return text.partition(":")[0]
    return text


def endpoint_ips(endpoints):
    """The endpoints that are IP addresses, normalised (DNS names cannot be compared with member addresses)."""
    found = []
    for endpoint in endpoints or ():
        address = _ip(endpoint_host(endpoint))
        if address is not None and str(address) not in found:
            found.append(str(address))
    return found


def parse_vips(values):
    """`vips` entries (addresses or networks) -> ip_network objects; InventoryError names a bad entry."""
    networks = []
    for value in values or ():
        if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            networks.append(value)
            continue
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise InventoryError("vips: %r is not an IP address or network (for example 10.5.0.10 or 10.5.0.8/29)." % (value,)) from None
    return networks


def parse_pins(pins):
    """`addresses` ({hostname: IP}) -> {hostname: normalised IP}; InventoryError names a bad entry."""
    if pins is None:
        return {}
    if not isinstance(pins, dict):
        raise InventoryError("addresses must be a mapping of node host names to IP addresses, e.g. {cp-1: 10.5.0.2}.")
    parsed = {}
    for name, value in pins.items():
        address = _ip(value)
        if address is None:
            raise InventoryError("addresses.%s: %r is not an IP address: pin the node's own IP address." % (name, value))
        parsed[str(name)] = str(address)
    return parsed


def _declared(address, networks):
    ip = _ip(address)
    for network in networks:
        if ip is not None and ip.version == network.version and ip in network:
            return network
    return None


# --- members -----------------------------------------------------------------------------------

def member_name(member):
    """The inventory host name of a member: its hostname, else its member id."""
    return member.get("hostname") or member.get("id") or ""


def member_group(member):
    """`controlplane` (init and controlplane members) or `worker`; InventoryError for any other type."""
    group = _GROUP_OF_TYPE.get(member.get("machine_type"))
    if group is None:
        raise InventoryError("member %s has machine type %r, neither control plane nor worker: is the node configured? "
                             "Finish its configuration (talosctl apply-config) before building the inventory."
                             % (member_name(member) or "(unnamed)", member.get("machine_type")))
    return group


def _unique(values):
    seen = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


def merge_members(*views):
    """Merge member lists seen from different nodes: one entry per member id, addresses in first-seen order.

    With Kubernetes discovery, a control plane and a worker each see a part of the cluster; with
    the discovery service both see everything, and the merge changes nothing.
    """
    merged = {}
    for view in views:
        for member in view:
            key = member.get("id") or member.get("hostname")
            if key not in merged:
                merged[key] = dict(member, addresses=_unique(member.get("addresses") or ()))
                continue
            known = merged[key]
            known["addresses"] = _unique(list(known["addresses"]) + list(member.get("addresses") or ()))
            for field in ("hostname", "operating_system"):
                if not known.get(field) and member.get(field):
                    known[field] = member[field]
            if known.get("machine_type") in (None, "", "unknown") and member.get("machine_type"):
                known["machine_type"] = member["machine_type"]
    return list(merged.values())


def has_worker(members):
    return any(member.get("machine_type") == "worker" for member in members)


async def query_members(client, discovery_nodes=()):
    """Members known to the endpoint, merged with those of another node when the endpoint's list has no worker.

    The other node is the first of `discovery_nodes` that is not already a known member's
    address, asked through the endpoint with the `node` header (workers are often not reachable
    directly). Returns (members, notes): notes are warnings for the user.
    """
    members = await client.members()
    if not members:
        raise InventoryError("the endpoint lists no cluster members: cluster discovery is probably disabled "
                             "(cluster.discovery.enabled: false). Enable it, or write the inventory by hand "
                             "(see docs/examples/inventory.yml).")
    notes = []
    if has_worker(members):
        return members, notes
    known = {address for member in members for address in member.get("addresses") or ()}
    for node in _unique(str(node).strip() for node in discovery_nodes or ()):
        address = _ip(node)
        if not node or (address is not None and str(address) in known):
            continue  # a known member sees the same part of the cluster as the endpoint
        try:
            view = await client.members(node=node)
        except TalosAPIError as exc:
            notes.append("could not read the cluster members known to discovery node %s: %s" % (node, exc))
            continue
        members = merge_members(members, view)
        if has_worker(view):
            return members, notes
        known.update(address for member in view for address in member.get("addresses") or ())
    notes.append(NO_WORKER_NOTE)
    return members, notes


# --- VIPs and address choice ---------------------------------------------------------------------

def _check_members(members):
    names = {}
    for member in members:
        name = member_name(member)
        if not name:
            raise InventoryError("a cluster member has neither a hostname nor an id: the Talos API reply is incomplete; "
                                 "check the node's Talos version.")
        if name in names:
            raise InventoryError("two cluster members share the host name %s (member ids %s and %s): give the nodes unique "
                                 "hostnames (machine.network.hostname)." % (name, names[name], member.get("id")))
        names[name] = member.get("id")
        member_group(member)


def _endpoints_per_node(members, endpoints, vips):
    """True when every control plane lists an endpoint address of its own: then endpoints are node addresses."""
    controlplanes = [member for member in members if member_group(member) == CONTROLPLANE]
    return bool(controlplanes) and all(
        any(address in endpoints and address not in vips for address in member.get("addresses") or ())
        for member in controlplanes)


def classify_addresses(members, endpoints=(), vips=()):
    """{address: VIP(kind, reason)} for every member address that must never be a node address."""
    networks = parse_vips(vips)
    endpoints = endpoint_ips(endpoints)
    listed_by = {}
    for member in members:
        for address in _unique(member.get("addresses") or ()):
            listed_by.setdefault(address, []).append(member_name(member))
    found = {}
    for address, names in listed_by.items():
        network = _declared(address, networks)
        if network is not None:
            found[address] = VIP(VIP_DECLARED, "declared a virtual IP in vips (%s)" % network)
        elif len(names) > 1:
            found[address] = VIP(VIP_SHARED, "listed by several members (%s): a shared virtual IP" % ", ".join(names))
    if endpoints and not _endpoints_per_node(members, endpoints, found):
        # The endpoints are not one per control plane: an endpoint a member lists next to other
        # addresses is the floating address talosctl is pointed at (talos#10357, #10145), not the node's own.
        for member in members:
            usable = [address for address in _unique(member.get("addresses") or ()) if address not in found]
            if not any(address not in endpoints for address in usable):
                continue
            for address in usable:
                if address in endpoints:
                    found[address] = VIP(VIP_ENDPOINT_ONLY, (
                        "an endpoint that %s lists next to its other addresses while not every control plane lists an "
                        "endpoint: a floating address in front of the control planes (a VIP), not the node's own"
                        % member_name(member)))
    return found


def _family(address):
    ip = _ip(address)
    return ip.version if ip is not None else None


def _natural_key(name):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _no_address_message(name, member, vips):
    addresses = member.get("addresses") or []
    if not addresses:
        detail = "lists no address"
    else:
        detail = "lists only virtual IPs: " + "; ".join("%s (%s)" % (address, vips[address].reason) for address in addresses)
    declared = any(vips[address].kind == VIP_DECLARED for address in addresses)
    return ("cluster member %s %s, so it has no address of its own to be reached by. Pin its address in the inventory "
            "option addresses (%s: <its own IP>)%s." % (name, detail, name, ", or correct vips" if declared else ""))


def _pinned_address(name, address, member, members, networks, vips):
    network = _declared(address, networks)
    if network is not None:
        raise InventoryError("addresses.%s is %s, which vips declares a virtual IP (%s): pin the node's own address, or "
                             "correct vips." % (name, address, network))
    vip = vips.get(address)
    if vip is not None and vip.kind == VIP_SHARED:
        raise InventoryError("addresses.%s is %s, which is %s: pin the node's own address." % (name, address, vip.reason))
    others = [member_name(other) for other in members if other is not member and address in (other.get("addresses") or ())]
    if others:
        raise InventoryError("addresses.%s is %s, an address of %s: pin the node's own address." % (name, address, ", ".join(others)))
    return address


def choose_hosts(members, endpoints=(), vips=(), pins=None):
    """Inventory hosts for `members`, in rotation order, and warnings for the user.

    Address of each member: its pin (option `addresses`), else the first address that is not a
    VIP (see classify_addresses), preferring its endpoint address when the endpoints are one per
    control plane. InventoryError, naming the node, when a member has no address of its own.
    """
    _check_members(members)
    networks = parse_vips(vips)
    pins = parse_pins(pins)
    names = {member_name(member) for member in members}
    unknown = sorted(set(pins) - names)
    if unknown:
        raise InventoryError("addresses names %s, which %s not a cluster member; members: %s. Use the members' host names."
                             % (", ".join(unknown), "is" if len(unknown) == 1 else "are", ", ".join(sorted(names, key=_natural_key))))
    found = classify_addresses(members, endpoints, networks)
    endpoints = endpoint_ips(endpoints)
    per_node = bool(endpoints) and _endpoints_per_node(members, endpoints, found)
    hosts = []
    warnings = []
    for member in members:
        name = member_name(member)
        group = member_group(member)
        if name in pins:
            address = _pinned_address(name, pins[name], member, members, networks, found)
        else:
            usable = [address for address in _unique(member.get("addresses") or ()) if address not in found]
            if not usable:
                raise InventoryError(_no_address_message(name, member, found))
            preferred = [address for address in usable if address in endpoints] if per_node else []
            address = (preferred or usable)[0]
            for skipped in member.get("addresses") or ():
                if skipped in found and found[skipped].kind == VIP_ENDPOINT_ONLY:
                    warnings.append("%s: not using %s as its address, %s. If %s is its own address, pin it in the inventory "
                                    "option addresses (%s: %s)." % (name, skipped, found[skipped].reason, skipped, name, skipped))
            alternatives = [other for other in usable if other != address and _family(other) == _family(address)]
            # An endpoint address was chosen because talosctl is pointed at it: no doubt left to report.
            if group == CONTROLPLANE and alternatives and not preferred:
                # A VIP that only its current holder lists looks like any other address: say which one was taken.
                warnings.append("%s lists several addresses (%s); using %s. If one of them is a virtual IP, declare it in the "
                                "inventory option vips, or pin the node's own address in addresses."
                                % (name, ", ".join(usable), address))
        hosts.append(Host(name=name, group=group, address=address, member=member))
    taken = {}
    for host in hosts:
        if host.address in taken:
            raise InventoryError("%s and %s would both be reached at %s: pin each node's own address in the inventory option "
                                 "addresses." % (taken[host.address], host.name, host.address))
        taken[host.address] = host.name
    hosts.sort(key=lambda host: (_TYPE_ORDER[host.member.get("machine_type")], _natural_key(host.name)))
    return hosts, warnings


def check_endpoints(endpoints, members=(), vips=()):
    """Refuse endpoints that are VIPs (declared, or listed by several members): Talos advises against them."""
    networks = parse_vips(vips)
    found = classify_addresses(members, (), networks) if members else {}
    for endpoint in endpoint_ips(endpoints):
        network = _declared(endpoint, networks)
        if network is not None:
            raise InventoryError("endpoints lists %s, which vips declares a virtual IP (%s). A VIP moves while etcd elects "
                                 "a new holder, which stalls a rotation (siderolabs/talos#6796, #10571): list the control "
                                 "planes' own addresses as endpoints, or leave endpoints unset." % (endpoint, network))
        vip = found.get(endpoint)
        if vip is not None and vip.kind == VIP_SHARED:
            raise InventoryError("endpoints lists %s, which is %s. List the control planes' own addresses as endpoints, or "
                                 "leave endpoints unset." % (endpoint, vip.reason))


def endpoints_for(hosts, explicit_endpoints=None):
    """talos_endpoints: the explicit endpoints, else the control planes' own addresses (never a VIP)."""
    if explicit_endpoints:
        return list(explicit_endpoints)
    return [host.address for host in hosts if host.group == CONTROLPLANE]
