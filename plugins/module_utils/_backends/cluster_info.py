# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""talos_cluster_info: read every node's CA fields and type, concurrently, and check them against the inventory."""

from __future__ import annotations

import asyncio
import hashlib
import os

from ansible_collections.talosops.pki.plugins.module_utils import _claim, _files, _pki, _rotation, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._auth import Target, with_auth
from ansible_collections.talosops.pki.plugins.module_utils._client import run as run_async
from ansible_collections.talosops.pki.plugins.module_utils._errors import (
    ClientNotTrustedError, ConfigError, NotFoundError, TalosAPIError, TalosPKIError)
from ansible_collections.talosops.pki.plugins.module_utils._inventory import endpoint_host, member_name, merge_members, normal_address
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig
from ansible_collections.talosops.pki.plugins.module_utils._kubelet import is_ready
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import (
    KIND_AGGREGATOR,
    LOCATION_AGGREGATOR_CA_CONFIG,
    LOCATION_SERVICE_ACCOUNT_CONFIG,
)
from ansible_collections.talosops.pki.plugins.module_utils._node_service import NodeService
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import SecretsBundle

ARGUMENT_SPEC = with_auth({
    "controlplanes": {"type": "list", "elements": "str", "required": True},
    "workers": {"type": "list", "elements": "str", "default": []},
    "prefer_talosconfig": {"type": "path"},
    "rotation_dirs": {"type": "dict", "default": {}},
    "concurrency": {"type": "int", "default": 64},
    "kubelet_health": {"type": "bool", "default": False},
    "kubelet_deadline": {"type": "float", "default": 60.0},
    "require_progress": {"type": "dict", "default": {}},
    "secrets_file": {"type": "path"},
    "kubeconfig": {"type": "path"},
    "remove_stray_cas": {"type": "bool", "default": False},
    "node_names": {"type": "dict", "default": {}},
    "rollback": {"type": "bool", "default": False},
})

KINDS = ("talos", "kubernetes")
SERVICE_ACCOUNT = _pki.KIND_SERVICE_ACCOUNT
KUBELET_POLL_INTERVAL = 0.5
MINIMUM_VERSION = (1, 7)
NODES_NAMED = 5  # in a warning, before "and N more"
# What the endpoint's apid answers when it cannot reach a node over mutual TLS because the two do not trust each other.
_TRUST_FAILURES = ("unknown authority", "bad certificate", "unknown ca", "failed to verify certificate")


def run(params, check_mode=False, diff=False, sealing=None):
    nodes = list(params["controlplanes"]) + list(params["workers"])
    duplicates = sorted({node for node in nodes if nodes.count(node) > 1})
    if duplicates:
        raise TalosPKIError("nodes listed more than once in the inventory: %s. Each node must appear once, in controlplane "
                            "or worker." % ", ".join(duplicates))
    if not params["controlplanes"]:
        raise TalosPKIError("no control-plane nodes given: the inventory group of control planes is empty. A rotation "
                            "patches control planes first; list them.")
    _check_required_progress_spec(params)
    # Files written only at the end of a rotation are checked now, before any node changes.
    if params["kubeconfig"] and os.path.lexists(os.path.expanduser(params["kubeconfig"])):
        Kubeconfig.load(os.path.expanduser(params["kubeconfig"]), sealing=sealing)
    bundle = SecretsBundle.load(params["secrets_file"], sealing=sealing) if params["secrets_file"] else None
    user_target = Target(params, sealing=sealing)
    _check_writable(params, user_target)
    _check_endpoints(user_target)
    _check_client_usage(user_target)
    target = _choose_credentials(params, user_target, sealing)
    rotations = {kind: _rotation_store.load(path, kind=kind, sealing=sealing) for kind, path in params["rotation_dirs"].items() if path}
    cluster = run_async(_gather(params, target, nodes))
    _name_nodes(cluster)
    label = _labeller(params["node_names"])
    problems = _check(cluster, params, rotations, label)
    if params.get("rollback"):
        problems.extend(_rollback_problems(cluster["nodes"], rotations))
    problems.extend(_shared_addresses(cluster, params, target.endpoints, label))
    if bundle is not None:
        problems.extend(_foreign_secrets(bundle, params["secrets_file"],
                                         dict(cluster["issuing_ca"], service_account=cluster["service_account_public"]), rotations))
    certificates = cluster.pop("certificates")
    cluster.pop("markers")
    cluster["service_account"] = cluster.pop("service_account_public")
    result = dict(cluster, changed=False, talosconfig=user_target.talosconfig_path, context=user_target.context.name,
                  talosconfig_used=target.talosconfig_path, endpoints=list(target.endpoints))
    # The kinds being rotated (all of them for a plain read).
    kinds = [kind for kind in KINDS if kind in params["rotation_dirs"]] or list(KINDS)
    result["stray_cas"] = _stray_cas(cluster, kinds, rotations, certificates)
    result["warnings"] = [_stray_warning(kind, strays, params["remove_stray_cas"], label) for kind, strays in result["stray_cas"].items()]
    if problems:
        return refusal(problems, result)
    return result


def _check_writable(params, user_target):
    """The files the rotation rewrites at its end (through links), checked now: a refusal then comes after every node changed."""
    files = [(params["secrets_file"], "secrets bundle"), (params["kubeconfig"] and os.path.expanduser(params["kubeconfig"]), "kubeconfig")]
    if "talos" in params["rotation_dirs"]:
        files.append((user_target.talosconfig_path, "talosconfig"))
    problems = [problem for problem in (_files.write_problem(path, what) for path, what in files if path) if problem]
    if problems:
        raise ConfigError("files the rotation updates at its end cannot be written, so nothing was changed: %s" % " ".join(problems))


def refusal(problems, result):
    """A refused preflight: the problems lead (each says what is wrong, on which nodes, what to do); what was read follows
    as `details` (no certificate PEM), which the action plugin shows from -v on."""
    details = {key: result[key] for key in ("nodes", "members", "stray_cas", "talosconfig_used", "endpoints") if key in result}
    details["issuing_ca"] = {kind: {key: value for key, value in ca.items() if key != "crt"}
                             for kind, ca in result.get("issuing_ca", {}).items()}
    return {"changed": False, "failed": True, "warnings": result.get("warnings", []), "problems": problems, "details": details,
            "msg": "preflight refused the rotation before any change%s: %s" % (
                " (%d problems)" % len(problems) if len(problems) > 1 else "", " ".join(problems))}


def _labeller(names):
    """node address -> "inventory name (address)" when the inventory name is known and differs, else the address."""
    def label(node):
        name = names.get(node)
        return "%s (%s)" % (name, node) if name and name != node else node
    return label


def _name_nodes(cluster):
    """Version through the endpoint (the `node` header) carries no hostname: take it from the member listing the address."""
    by_address = {normal_address(address): member.get("hostname") for member in cluster["members"]
                  for address in member.get("addresses") or ()}
    for node, facts in cluster["nodes"].items():
        hostname = facts.get("hostname") or by_address.get(normal_address(node))
        if hostname:
            facts["hostname"] = hostname
        else:
            facts.pop("hostname", None)


def _check_endpoints(target):
    """Endpoints the client cannot parse are refused with what to fix, not as an internal error."""
    try:
        target.client()  # parses every endpoint; opens no connection
    except ValueError as error:
        raise ConfigError("%s in %s: give each endpoint as an address or host name, optionally with a numeric port (10.5.0.2, "
                          "10.5.0.2:50000, [fd00::2]:50000). Fix talos_endpoints / rotate_ca_endpoints, or the endpoints of "
                          "context %s in %s." % (error, list(target.endpoints), target.context.name, target.talosconfig_path)) from None


def _check_client_usage(target):
    """apid refuses a client certificate whose ExtendedKeyUsage is not exactly [ClientAuth]; its refusal names no remedy."""
    usages = _pki.describe_certificate(target.credentials.crt)["extended_key_usage"]
    if usages and usages != ["client_auth"]:
        raise ConfigError("the client certificate of context %s in %s has ExtendedKeyUsage %s, and Talos (apid) refuses any client "
                          "certificate whose ExtendedKeyUsage is not exactly [ClientAuth]: use a talosconfig with an admin "
                          "certificate issued for ClientAuth only (talosctl config new, or the talosconfig talosctl gen config "
                          "wrote)." % (target.context.name, target.talosconfig_path, "+".join(usages)))


def _choose_credentials(params, user_target, sealing=None):
    """The rotation's new admin talosconfig once the endpoint trusts it, else the user's.

    Not once its rotation has completed: the user's talosconfig then holds the same CA's credentials, and a run that starts
    a new rotation archives the completed one and writes the new, not yet trusted, CA's credentials at the same path.
    """
    preferred = params.get("prefer_talosconfig")
    if preferred and os.path.isfile(preferred) and not _completed_rotation_holds(preferred, sealing):
        target = Target(dict(params, context=user_target.context.name), talosconfig=preferred, sealing=sealing)
        try:
            run_async(_version(target))
            return target
        except ClientNotTrustedError:
            pass
    return user_target


def _completed_rotation_holds(talosconfig, sealing=None):
    """Whether `talosconfig` sits in the folder of a Talos API CA rotation recorded as completed."""
    try:
        rotation = _rotation_store.load(os.path.dirname(os.path.abspath(talosconfig)), kind="talos", sealing=sealing)
    except TalosPKIError:
        return False  # not a rotation folder of ours: the file is judged by whether the endpoint trusts it
    return rotation is not None and bool(rotation.completed)


async def _version(target):
    async with target.client() as client:
        return await client.version()


async def _gather(params, target, nodes):
    limit = asyncio.Semaphore(params["concurrency"])
    async with target.client() as client:
        # One call first: credentials the endpoint refuses fail here, once and plainly, not in every concurrent read.
        await client.version()

        certificates, markers = {}, {}

        async def one(node):
            async with limit:
                try:
                    return node, await _read_node(client, node, certificates, markers)
                except TalosAPIError as error:
                    return node, error
        per_node = dict(await asyncio.gather(*(one(node) for node in nodes)))
        failed = {node: facts for node, facts in per_node.items() if isinstance(facts, TalosAPIError)}
        if failed:
            members = await client.members()
            readable = [node for node in params["workers"] if node not in failed]
            if readable:
                members = merge_members(members, await client.members(node=readable[0]))
            raise _unreadable(failed, members, params, target.endpoints)
        if params["kubelet_health"]:
            deadline = asyncio.get_running_loop().time() + params["kubelet_deadline"]

            async def kubelet(node):
                async with limit:
                    per_node[node]["kubelet"] = await _kubelet_state(client, node, deadline)
            await asyncio.gather(*(kubelet(node) for node in nodes))
        roots = {"talos": await client.os_root(), "kubernetes": await _kubernetes_root(client)}
        # With Kubernetes discovery a control plane lists only control planes (siderolabs/talos#10145): ask a worker too.
        members = await client.members()
        if params["workers"]:
            members = merge_members(members, await client.members(node=params["workers"][0]))
    issuing = {}
    for kind, root in roots.items():
        crt = (root or {}).get("issuing_ca", {}) or {}
        if crt.get("crt"):
            facts = _pki.describe_certificate(crt["crt"])
            issuing[kind] = {"crt": crt["crt"].decode(), "fingerprint": facts["fingerprint_sha256"],
                             "subject": facts["subject"], "not_after": facts["not_after"], "key_type": facts["key_type"]}
    public_keys = {node: facts[SERVICE_ACCOUNT].pop("_public_key", None) for node, facts in per_node.items()}
    first = params["controlplanes"][0]
    # The current signing key as the first control plane has it (the endpoint's view, as for the CAs).
    signing = ({"fingerprint": per_node[first][SERVICE_ACCOUNT]["issuing_ca"], "public_key": public_keys[first]}
               if public_keys[first] else None)
    return {"nodes": per_node, "issuing_ca": issuing, "members": members, "certificates": certificates, "markers": markers,
            "service_account_public": signing}


async def _kubelet_state(client, node, deadline):
    """The kubelet's state, polled until it runs and is healthy or the deadline passes (a restart may be finishing)."""
    loop = asyncio.get_running_loop()
    while True:
        state = await client.service("kubelet", node=node)
        facts = {"running": state["running"], "healthy": state["healthy"]}
        if is_ready(state) or loop.time() + KUBELET_POLL_INTERVAL > deadline:
            return facts
        await asyncio.sleep(KUBELET_POLL_INTERVAL)


async def _kubernetes_root(client):
    try:
        return await client.kubernetes_root()
    except NotFoundError:
        return None


async def read_node(client, node):
    """(Version reply, parsed active machine config) of one node, through the client's endpoint: what every report on
    the nodes (this preflight, talos_cert_info) starts from."""
    state = await NodeService(client).read(node, version=True)
    return state.version, state.config


async def _read_node(client, node, certificates, markers):
    """The node's facts; the accepted CA certificates' public facts go into `certificates`, by fingerprint, and the
    rotation markers of all its CAs into `markers`."""
    state = await NodeService(client).read(node, version=True)
    version, config = state.version, state.config
    cluster_id, cluster_name = config.cluster_identity
    # The cluster id is shown only as a digest: together with the cluster secret it admits a node to discovery.
    facts = {"cluster_id": hashlib.sha256(cluster_id.encode()).hexdigest()[:16] if cluster_id else None, "cluster_name": cluster_name,
             "hostname": version.get("hostname"), "talos_version": version.get("tag"), "machine_type": config.machine_type,
             "kubernetes_ca_location": config.kubernetes_ca_location,
             "aggregator_ca_location": config.aggregator_ca_location, "service_account_location": config.service_account_location,
             "virtual_ips": list(config.virtual_ips)}
    facts[SERVICE_ACCOUNT] = _service_account_facts(config, node)
    for kind in KINDS:
        fields, cas = state.ca(kind)
        facts[kind] = {"issuing_ca": cas.issuing, "accepted_cas": list(cas.accepted)}
        for fingerprint, crt in zip(facts[kind]["accepted_cas"], fields.accepted):
            if fingerprint not in certificates:
                described = _pki.describe_certificate(crt)
                certificates[fingerprint] = {"subject": described["subject"], "not_after": described["not_after"]}
        for crt in ((fields.issuing_crt,) if fields.issuing_crt else ()) + tuple(fields.accepted):
            ca = _claim.marked(crt)
            if ca is not None:
                markers[ca.fingerprint] = ca.marker
    if facts["aggregator_ca_location"] == LOCATION_AGGREGATOR_CA_CONFIG:
        # Control planes of v1.14+ only; the issuing certificate (public) is what a new aggregator rotation replaces.
        fields, cas = state.ca(KIND_AGGREGATOR)
        facts[KIND_AGGREGATOR] = {"issuing_ca": cas.issuing, "issuing_ca_crt": fields.issuing_crt.decode() if fields.issuing_crt else None,
                                  "accepted_cas": list(cas.accepted)}
    return facts


def _service_account_facts(config, node):
    """A control plane's service-account keys as public-key fingerprints (the signing key in the issuing_ca slot, so the
    rotation's progress reads as for a CA); workers and v1.13 shapes carry none. `_public_key` (the signing key's public
    key, never the private one) is taken out by _gather."""
    location = config.service_account_location
    facts = {"location": location, "issuing_ca": None, "accepted_cas": []}
    if location != LOCATION_SERVICE_ACCOUNT_CONFIG:
        return facts
    fields = config.get_service_account()
    if fields.signing_key:
        facts["issuing_ca"] = _pki.public_key_fingerprint(fields.signing_key, "service-account key of %s" % node)
        facts["_public_key"] = _pki.public_key_hex(fields.signing_key)
    facts["accepted_cas"] = [_pki.public_key_fingerprint(pem, "accepted public key of %s" % node) for pem in fields.accepted]
    return facts


def _service_account_problems(params, nodes, rotation, endpoint, label=str):
    """The graceful service-account rotation needs every control plane on the v1.14+ shape, and one signing key (or the
    two sides of the rotation in progress)."""
    controlplanes = params["controlplanes"]
    legacy = sorted(node for node in controlplanes if nodes[node][SERVICE_ACCOUNT]["location"] != LOCATION_SERVICE_ACCOUNT_CONFIG)
    if legacy:
        locations = ", ".join(sorted({str(nodes[node][SERVICE_ACCOUNT]["location"] or "no service-account key") for node in legacy}))
        return ["%s keep the service-account key in %s (Talos v1.13 or older): it has no accepted-keys list, so the key cannot "
                "be rotated without invalidating every service-account token at once. Upgrade them to Talos v1.14+ (the config "
                "then carries a %s document) and run again." % (", ".join(map(label, legacy)), locations, LOCATION_SERVICE_ACCOUNT_CONFIG)]
    problems = []
    for node in controlplanes:
        facts = nodes[node][SERVICE_ACCOUNT]
        if rotation is None:
            expected = (endpoint or {}).get("fingerprint")
            if facts["issuing_ca"] != expected:
                problems.append("%s signs service-account tokens with another key (%s) than %s (%s): the control planes "
                                "disagree, so a rotation is half done or they belong to different clusters. Bring them back to "
                                "one signing key first." % (label(node), (facts["issuing_ca"] or "none")[:16], label(controlplanes[0]),
                                                            (expected or "none")[:16]))
            continue
        cas = _rotation.NodeCAs(facts["issuing_ca"], tuple(facts["accepted_cas"]))
        facts["progress"] = _rotation.progress(cas, rotation.previous_ca_fingerprint, rotation.ca_fingerprint)
        if facts["progress"] == _rotation.FOREIGN:
            problems.append("%s: its service-account signing key is neither the rotation's previous key nor its new key (%s): "
                            "the rotation directory belongs to another cluster or rotation." % (label(node), rotation.path))
    return problems


def _parse_version(tag):
    try:
        major, minor = tag.lstrip("v").split(".")[:2]
        return int(major), int(minor)
    except (AttributeError, ValueError):
        return None


def _check(cluster, params, rotations, label=str):
    problems = []
    nodes = cluster["nodes"]
    for group, members in (("controlplane", params["controlplanes"]), ("worker", params["workers"])):
        for node in members:
            actual = "worker" if nodes[node]["machine_type"] == "worker" else "controlplane"
            if actual != group:
                problems.append("%s is listed under %s but its machine.type is %s: move it to the %s group." % (
                    label(node), group, nodes[node]["machine_type"], actual))
    for node, facts in nodes.items():
        version = _parse_version(facts["talos_version"])
        if version is not None and version < MINIMUM_VERSION:
            problems.append("%s runs Talos %s: CA rotation needs Talos v1.7 or later (acceptedCAs); upgrade it first." % (
                label(node), facts["talos_version"]))
    unhealthy = sorted(node for node, facts in nodes.items() if "kubelet" in facts and not is_ready(facts["kubelet"]))
    if unhealthy:
        problems.append("the kubelet is not running and healthy on %s (within %ss): a Kubernetes CA rotation restarts every "
                        "kubelet and waits for it, so it starts only on a healthy cluster. Fix those nodes first (talosctl -n NODE "
                        "service kubelet; talosctl -n NODE logs kubelet), then rerun." % (", ".join(map(label, unhealthy)), params["kubelet_deadline"]))
    if SERVICE_ACCOUNT in (params.get("rotation_dirs") or {}):
        problems.extend(_service_account_problems(params, nodes, rotations.get(SERVICE_ACCOUNT), cluster["service_account_public"],
                                                  label))
    for kind, rotation in rotations.items():
        if kind == SERVICE_ACCOUNT:
            continue
        if rotation is None:
            problems.extend(_disagreements(kind, nodes, cluster["issuing_ca"].get(kind), label))
            continue
        for node, facts in nodes.items():
            cas = _rotation.NodeCAs(facts[kind]["issuing_ca"], tuple(facts[kind]["accepted_cas"]))
            facts[kind]["progress"] = _rotation.progress(cas, rotation.previous_ca_fingerprint, rotation.ca_fingerprint)
            if facts[kind]["progress"] == _rotation.FOREIGN:
                problems.append("%s: its %s issuing CA is neither the rotation's previous CA nor its new CA (%s): the rotation "
                                "directory belongs to another cluster or rotation." % (label(node), kind, rotation.path))
    for kind, rotation in rotations.items():  # one per rotation_dirs kind; None before this directory's rotation exists
        if kind == SERVICE_ACCOUNT:
            continue  # keys carry no rotation marker: _service_account_problems tells another rotation's key apart
        problems.extend(_other_rotations(kind, nodes, cluster.get("markers", {}), rotation, params["remove_stray_cas"]))
    problems.extend(_missing_progress(params, nodes, rotations, label))
    problems.extend(_members_left_out(cluster["members"], params))
    problems.extend(_mixed_clusters(nodes, params))
    problems.extend(_not_members(nodes, cluster["members"], params))
    return problems


def node_label(node, params):
    """`name (address)` when the inventory name is known, else the address (the same rule as _labeller)."""
    return _labeller(params.get("node_names") or {})(node)


_ONE_CLUSTER_PER_RUN = ("A rotation covers exactly one cluster: give each cluster its own inventory (or its own "
                        "controlplane/worker groups, with rotate_ca_hosts, rotate_ca_controlplane_group and "
                        "rotate_ca_worker_group), its own talosconfig and its own rotate_ca_dir, and run one job per cluster "
                        "(docs/fleet.md).")


def _unreadable(failed, members, params, endpoints):
    """Nodes the endpoint could not read. Those that answered over TLS but do not trust the endpoint (or it them), and are
    not members of its cluster, are another cluster's nodes: one refusal names them all. Otherwise the first node's own
    error, with a hint when that node is no member either (a typo, a node removed from the cluster)."""
    known = {normal_address(address) for member in members for address in member.get("addresses") or ()}
    strangers = {node for node in failed if normal_address(node) not in known}
    foreign = sorted(node for node in strangers if any(text in str(failed[node]) for text in _TRUST_FAILURES))
    if not foreign:
        node = sorted(failed)[0]
        error = failed[node]
        if known and node in strangers:
            error = type(error)("%s. Moreover %s is not a member of the cluster behind endpoint %s: check the inventory for a "
                                "typo, a node removed from the cluster, or another cluster's node." % (
                                    str(error).rstrip("."), node_label(node, params), ", ".join(endpoints)), node=error.node)
        raise error
    listed = list(params["controlplanes"]) + list(params["workers"])
    ours = [node for node in listed if node not in failed]
    many = len(foreign) > 1
    return TalosPKIError(
        "preflight refused the rotation before any change: the inventory mixes nodes of different clusters. %s %s of the "
        "cluster behind endpoint %s (the cluster of %s), or %s not trust its Talos API CA: the endpoint cannot reach %s over "
        "mutual TLS. %s" % (
            ", ".join(node_label(node, params) for node in foreign), "are not members" if many else "is not a member",
            ", ".join(endpoints), _some([node_label(node, params) for node in ours]) if ours else "none of the inventory's nodes",
            "do" if many else "does", "them" if many else "it", _ONE_CLUSTER_PER_RUN))


def _not_members(nodes, members, params):
    """Nodes the endpoint reads but its cluster's discovery does not list: another cluster's nodes that trust the same
    Talos API CA (clusters made from one secrets bundle), or nodes that left. Without discovery (no members) nothing is known."""
    known = {normal_address(address) for member in members for address in member.get("addresses") or ()}
    names = {member.get("hostname") for member in members} - {None, ""}
    if not known:
        return []
    strangers = sorted(node for node in nodes if normal_address(node) not in known and node not in names)
    if not strangers:
        return []
    plural = "s" if len(strangers) > 1 else ""
    return ["%s %s not listed by the discovery of the cluster behind the endpoint (its members: %s): another cluster's "
            "node%s (a cluster that shares this one's Talos API CA, e.g. made from the same secrets bundle), or node%s that "
            "left the cluster. %s" % (
                ", ".join(node_label(node, params) for node in strangers), "are" if plural else "is",
                _some([member_name(member) for member in members]), plural, plural, _ONE_CLUSTER_PER_RUN)]


def _mixed_clusters(nodes, params):
    """Nodes the endpoint can read may still declare different clusters (cluster.id / DiscoveryIdentityConfig)."""
    by_cluster = {}
    for node, facts in nodes.items():
        if facts.get("cluster_id"):
            by_cluster.setdefault(facts["cluster_id"], []).append(node)
    if len(by_cluster) < 2:
        return []
    described = []
    for cluster_id, members in sorted(by_cluster.items(), key=lambda item: item[1][0]):
        name = next((nodes[node]["cluster_name"] for node in members if nodes[node].get("cluster_name")), "unnamed")
        described.append("cluster %s (id digest %s): %s" % (name, cluster_id, _some([node_label(node, params) for node in members])))
    return ["the inventory mixes nodes of %d different clusters (by cluster id in their machine configs): %s. %s" % (
        len(by_cluster), "; ".join(described), _ONE_CLUSTER_PER_RUN)]


def _rollback_problems(nodes, rotations):
    """A rollback starts only where it can finish: no node past the remove phase, and the old CA's key at hand."""
    problems = []
    for kind, rotation in rotations.items():
        if rotation is None:
            continue
        progress = {node: facts[kind].get("progress") for node, facts in nodes.items()}
        removed = _rotation.rollback_blockers(progress)
        if removed:
            problems.append("the %s CA rotation in %s cannot be rolled back: the remove phase has run on %s, which no longer "
                            "accept%s the CA being replaced (%s), so its clients are refused there already. Finish the rotation "
                            "instead (run again without rotate_ca_rollback); to leave its new CA, start a new rotation once it "
                            "has completed (rotate_ca_start_new=true)." % (
                                kind, rotation.path, _some(removed), "s" if len(removed) == 1 else "",
                                rotation.previous_ca_fingerprint[:16]))
        swapped_controlplanes = sorted(node for node, facts in nodes.items() if facts["machine_type"] != "worker"
                                       and progress[node] == _rotation.SWAPPED)
        if swapped_controlplanes and not rotation.has_previous_ca_key:
            key_path = rotation.file(_rotation_store.PREVIOUS_CA_KEY)
            problems.append("the %s CA rotation in %s holds no key of the CA being replaced (previous-ca.key), and the control "
                            "planes %s issue with the new CA: they cannot issue with the old one again. Finish the rotation "
                            "instead (run again without rotate_ca_rollback), or put the old CA's key from the cluster's "
                            "secrets.yaml into %s (0600)." % (kind, rotation.path, _some(swapped_controlplanes), key_path))
    return problems


def _other_rotations(kind, nodes, markers, rotation, remove_strays):
    """One rotation per cluster: a rotation in progress that is not this run's, seen in the rotation marker of a CA the
    nodes carry (whichever directory, controller or copy of the collection started it), stops the run now."""
    held, issuing, holders = set(), set(), {}
    for node, facts in nodes.items():
        fingerprints = ([facts[kind]["issuing_ca"]] if facts[kind]["issuing_ca"] else []) + list(facts[kind]["accepted_cas"])
        held.update(fingerprints)
        issuing.add(facts[kind]["issuing_ca"])
        for fingerprint in fingerprints:
            holders.setdefault(fingerprint, []).append(node)
    cas = [_claim.MarkedCA(fingerprint, markers[fingerprint]) for fingerprint in sorted(held) if markers.get(fingerprint)]
    mine = previous = None
    if rotation is not None:
        mine = _claim.marked(rotation.ca_cert()) or _claim.MarkedCA(rotation.ca_fingerprint, {"created": rotation.created})
        previous = rotation.previous_ca_fingerprint
    problems = []
    for ca in _claim.blocking(cas, held, issuing, mine, previous, remove_strays):
        if mine is not None and ca.marker.get("previous") == previous:
            why = ("both rotations replace the same CA and that one started first, so this run's rotation (%s) lost the race "
                   "for the cluster" % rotation.path)
        else:
            why = "only one rotation per cluster at a time, and this run's (%s) is another" % (
                rotation.path if rotation is not None else "not started yet")
        problems.append(
            "%s carry the %s %s, which is in progress: %s. Finish that rotation from its own rotation directory (on %s), "
            "then rerun; if it was abandoned before its swap phase (it issues on no node), rerun with "
            "rotate_ca_remove_stray_cas=true to go on and drop it in the remove phase." % (
                _some(sorted(holders[ca.fingerprint])), kind, _claim.describe(ca), why, ca.marker.get("host") or "its controller"))
    return problems


def _stray_cas(cluster, kinds, rotations, certificates):
    """Per CA kind, the accepted CAs that are neither the current nor the new CA (e.g. left by an aborted
    `talosctl rotate-ca`, which makes a new CA on every run), with the nodes that accept each."""
    found = {}
    for kind in kinds:
        rotation = rotations.get(kind)
        if rotation is not None:
            known = {rotation.previous_ca_fingerprint, rotation.ca_fingerprint}
        else:
            known = {(cluster["issuing_ca"].get(kind) or {}).get("fingerprint")}
        nodes_by_stray = {}
        for node, facts in cluster["nodes"].items():
            for fingerprint in facts[kind]["accepted_cas"]:
                if fingerprint not in known | {facts[kind]["issuing_ca"]}:
                    nodes_by_stray.setdefault(fingerprint, []).append(node)
        if nodes_by_stray:
            found[kind] = [dict(certificates[fingerprint], fingerprint=fingerprint, nodes=nodes)
                           for fingerprint, nodes in sorted(nodes_by_stray.items())]
    return found


def _stray_warning(kind, strays, remove, label=str):
    described = "; ".join("%s (%s, expires %s) on %s" % (
        stray["fingerprint"][:16], stray["subject"], stray["not_after"], _some([label(node) for node in stray["nodes"]]))
        for stray in strays)
    fate = ("they are removed in the remove phase (remove_stray_cas), and clients whose certificates they issued are refused "
            "from then on" if remove else
            "the rotation keeps them; to drop them in the remove phase, set rotate_ca_remove_stray_cas=true (talos_machine_patch "
            "remove_stray_cas) once you know where they come from")
    return ("%s CA: %d accepted CA(s) are neither the current nor the new CA - %s. Perhaps left by an aborted `talosctl rotate-ca`, or "
            "added by hand: %s." % (kind, len(strays), described, fate))


def _some(nodes):
    named = ", ".join(nodes[:NODES_NAMED])
    return named if len(nodes) <= NODES_NAMED else "%s and %d more" % (named, len(nodes) - NODES_NAMED)


def _shared_addresses(cluster, params, endpoints, label=str):
    """A shared virtual IP reaches whichever control plane holds it (siderolabs/talos#10357): never a node address, nor an
    endpoint, which moves when etcd elects another holder - something a rotation can cause."""
    vips = {normal_address(address) for facts in cluster["nodes"].values() for address in facts["virtual_ips"]}
    declared = {}  # VIP -> the nodes whose config declares it
    for node, facts in cluster["nodes"].items():
        if normal_address(node) in vips:
            continue  # the VIP itself, read as its holder
        for address in facts["virtual_ips"]:
            declared.setdefault(normal_address(address), []).append(node)
    listed = list(params["controlplanes"]) + list(params["workers"])
    problems = []
    for address in listed:
        if normal_address(address) in declared:
            problems.append("%s, listed as a node, is a shared virtual IP (declared in the machine config of %s): it reaches "
                            "whichever control plane holds it, so that node would be patched twice under two names. List every "
                            "node once, by its own address (talos_node_address or ansible_host), and drop the VIP from the "
                            "inventory." % (label(address), _some([label(node) for node in declared[normal_address(address)]])))
    for endpoint in endpoints:
        host = normal_address(endpoint_host(endpoint))
        if host in declared:
            problems.append("endpoint %s is a shared virtual IP (declared in the machine config of %s): it moves to another "
                            "control plane whenever etcd elects a new holder, which a rotation can cause, and Talos advises "
                            "against it as a talosctl endpoint. Use the control planes' own addresses as endpoints "
                            "(talos_endpoints / rotate_ca_endpoints, or the talosconfig context's endpoints)." % (
                                endpoint, _some([label(node) for node in declared[host]])))
    for member in cluster["members"]:
        addresses = {normal_address(address) for address in member.get("addresses") or ()}
        aliases = [address for address in listed if normal_address(address) in addresses]
        if len(aliases) > 1:
            problems.append("%s are addresses of one cluster member, %s: the inventory lists that node more than once, "
                            "and only one of them is its own address (another is a shared VIP or a second interface). List "
                            "it once, by its own address." % (" and ".join(map(label, aliases)), member_name(member)))
    return problems


def _members_left_out(members, params):
    """Every cluster member must be rotated: one left out would be locked out when the old CA is removed."""
    # Compared in canonical form: fd00:0::2 in the inventory is the member address fd00::2.
    listed = {normal_address(address) for address in list(params["controlplanes"]) + list(params["workers"])}
    left_out = ["%s (%s, %s)" % (member_name(member), ", ".join(member.get("addresses") or ()) or "no address",
                                 member.get("machine_type") or "unknown type")
                for member in members if not listed & {normal_address(address) for address in member.get("addresses") or ()}]
    if not left_out:
        return []
    return ["the cluster has members the inventory does not list: %s. A rotation must cover every node, or those left out "
            "are locked out when the old CA is removed: add them to the controlplane or worker group (the talosops.pki.talos "
            "inventory plugin lists every member)." % "; ".join(left_out)]


def _foreign_secrets(bundle, path, issuing, rotations):
    """The secrets bundle the rotation will update must hold this cluster's CA (or, resuming, the rotation's new one)."""
    problems = []
    for kind, rotation in rotations.items():
        if kind == SERVICE_ACCOUNT:
            problems.extend(_foreign_service_account_key(bundle, path, issuing.get(kind), rotation))
            continue
        known = {(issuing.get(kind) or {}).get("fingerprint")}
        if rotation is not None:
            known |= {rotation.previous_ca_fingerprint, rotation.ca_fingerprint}
        held = _pki.fingerprint(bundle.get_ca(kind)[0])
        if held not in known:
            problems.append("%s holds a %s CA (%s) that is neither the cluster's nor the rotation's: it belongs to another cluster. "
                            "Point rotate_ca_secrets_file at this cluster's secrets.yaml." % (path, kind, held[:16]))
    return problems


def _foreign_service_account_key(bundle, path, signing, rotation):
    known = {(signing or {}).get("fingerprint")}
    if rotation is not None:
        known |= {rotation.previous_ca_fingerprint, rotation.ca_fingerprint}
    held = _pki.public_key_fingerprint(bundle.get_service_account_key(), "%s certs.k8sserviceaccount.key" % path)
    if held in known:
        return []
    return ["%s holds a service-account key (public key %s) that is neither the cluster's nor the rotation's: it belongs to "
            "another cluster. Point rotate_ca_secrets_file at this cluster's secrets.yaml." % (path, held[:16])]


def _check_required_progress_spec(params):
    for kind, minimum in params["require_progress"].items():
        if kind not in KINDS + (SERVICE_ACCOUNT,) or minimum not in _rotation.PROGRESS:
            raise TalosPKIError("require_progress maps a CA kind (%s) to the progress every node must have reached (%s); got %s: %s."
                                % (", ".join(KINDS + (SERVICE_ACCOUNT,)), ", ".join(_rotation.PROGRESS), kind, minimum))


def _missing_progress(params, nodes, rotations, label=str):
    """A job that starts with a later phase (phases as separate jobs) needs every node through the earlier ones."""
    problems = []
    for kind, minimum in params["require_progress"].items():
        if minimum == _rotation.PENDING:
            continue
        phase = next(phase for phase, reached in _rotation.PHASE_REACHES.items() if reached == minimum)
        if rotations.get(kind) is None:
            problems.append("no %s CA rotation is in progress in %s, but this run starts after the %s phase: run the phases "
                            "from accept on first (or point the rotation directory at the rotation's)." % (
                                kind, params["rotation_dirs"].get(kind), phase))
            continue
        behind = sorted(node for node, facts in nodes.items() if facts[kind].get("progress") in _rotation.PROGRESS
                        and _rotation.PROGRESS.index(facts[kind]["progress"]) < _rotation.PROGRESS.index(minimum))
        if behind:
            problems.append("this run starts after the %s phase of the %s CA rotation, but %s %s not reached it (%s): run the "
                            "%s phase first." % (phase, kind, ", ".join(map(label, behind)), "has" if len(behind) == 1 else "have",
                                                 ", ".join("%s is %s" % (label(node), nodes[node][kind]["progress"]) for node in behind),
                                                 phase))
    return problems


def _disagreements(kind, nodes, endpoint_issuing, label=str):
    """Before a rotation starts, every node must issue with the CA the endpoint reports."""
    expected = (endpoint_issuing or {}).get("fingerprint")
    # A node without an issuing CA field (a v1.14+ worker's Kubernetes CA) must at least accept the endpoint's.
    odd = sorted(node for node, facts in nodes.items() if facts[kind]["issuing_ca"] not in (None, expected)
                 or (facts[kind]["issuing_ca"] is None and expected and expected not in facts[kind]["accepted_cas"]))
    if not odd:
        return []
    return ["%s: the %s issuing CA differs from the endpoint's (%s) (on nodes without an issuing CA field: the endpoint's is not "
            "accepted), so a rotation is already half done (an aborted "
            "`talosctl rotate-ca`?) or the nodes belong to different clusters. Bring every node back to one issuing CA "
            "first." % (", ".join(map(label, odd)), kind, (expected or "none")[:16])]
