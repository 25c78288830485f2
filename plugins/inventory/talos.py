# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: talos
short_description: Talos Linux cluster nodes as inventory hosts, read from the Talos API
version_added: 0.1.0
description:
  - Builds an inventory from a running Talos cluster - lists the cluster members through a Talos API endpoint and makes
    one host per node, named by its hostname, in the groups C(controlplane) (init and control-plane nodes) and C(worker).
  - Each host gets its address as the host variable C(talos_node_address), plus C(talos_machine_type), C(talos_member_id),
    C(talos_member_addresses) (every address the member lists) and C(talos_operating_system).
  - The group C(all) gets C(talos_endpoints), C(talos_talosconfig), C(talos_context), C(ansible_connection=local) and
    C(ansible_python_interpreter={{ ansible_playbook_python }}) (Talos has no SSH; every task runs on the controller), so
    the C(talosops.pki.rotate_talos_ca) playbook and the C(talosops.pki.rotate_ca) role work with it unchanged.
  - C(talos_endpoints) is O(endpoints) when set, else the control planes' own addresses chosen below - never a virtual IP,
    as Talos advises for C(talosctl) endpoints. The talosconfig context's endpoints are only used to read the members.
  - C(talos_talosconfig) is O(talosconfig) when set. When not set it is null, so that at run time the role finds the
    talosconfig as C(talosctl) does (E(TALOSCONFIG), else C(~/.talos/config)); in AWX, the credential's file path of the
    inventory sync no longer exists when the job runs.
  - B(Node addresses are never virtual IPs.) A member may list several addresses, a VIP among them, even first
    (siderolabs/talos#10357 - C(talosctl rotate-ca) picked the VIP and hung). An address is treated as a VIP when O(vips)
    declares it, when several members list it, or when it is an endpoint-only address - an endpoint that one member lists
    next to other addresses while the endpoints are not one per control plane (a floating address in front of the
    control planes). Each node gets the first of its addresses that is not a VIP; when the endpoints are one per control
    plane, a control plane's own endpoint address is preferred. A node left without an address fails the inventory with
    a message naming it. O(addresses) pins addresses by host name and overrides this choice.
  - B(Kubernetes discovery.) With the Kubernetes discovery registry a control plane lists only control planes and a
    worker only workers (siderolabs/talos#10145). When the endpoint's member list holds no worker, the plugin also asks
    the first of O(discovery_nodes) that is not a known member, through the endpoint with the C(node) header, and merges
    both lists. Without such a node it warns that workers may be missing.
  - Caching (O(cache)) stores the member lists, not the addresses chosen, so changing O(vips) or O(addresses) needs no
    C(--flush-cache). A cached result is used only for the same talosconfig, context, endpoints and discovery nodes; a
    cache hit does not extend its lifetime.
  - The inventory file name must end in C(talos.yml) or C(talos.yaml).
author:
  - talosops.pki contributors (@talosops)
extends_documentation_fragment:
  - constructed
  - inventory_cache
  - talosops.pki._auth
options:
  plugin:
    description:
      - Marks this file as a source for this plugin.
    type: str
    required: true
    choices: [talosops.pki.talos]
  context:
    description:
      - Context of the talosconfig to use. The talosconfig's current context when not set (or set to an empty string).
      - The context used becomes C(talos_context), so that the rotation uses the same one.
    type: str
    env:
      # Set by the AWX credential type of docs/awx, for inventory syncs (AWX injects no extra vars there).
      - name: TALOSOPS_CONTEXT
  endpoints:
    description:
      - Control-plane endpoints (IP or host name, optionally with a port) to read the members through, instead of the
        talosconfig context's endpoints.
      - Also the value of C(talos_endpoints); when not set, C(talos_endpoints) lists the control planes' own addresses.
      - An endpoint that is a virtual IP (declared in O(vips), or listed by several members) is refused.
    type: list
    elements: str
  vips:
    description:
      - Virtual IPs (addresses or networks) that must never be a node address or an endpoint, for example the shared
        control-plane VIP of C(machine.network.interfaces[].vip) or C(Layer2VIPConfig).
      - Declare the VIP here when each control plane has its own endpoint; a VIP that only its current holder lists
        cannot be told from that node's own address otherwise.
    type: list
    elements: str
    default: []
  addresses:
    description:
      - Node addresses to use instead of the ones chosen, as a mapping of host name (as the members name the nodes) to
        IP address, for example C(cp-1) to C(10.5.0.2).
      - A pinned address must be an IP address and must not be a declared or shared VIP or another member's address.
    type: dict
    default: {}
  rotation_dir:
    description:
      - The rotation folder the C(talosops.pki.rotate_ca) role uses for this cluster (its C(rotate_ca_dir)). While a Talos
        API CA rotation kept there is in progress, the nodes serve with the old or the new CA depending on the phase
        reached; the plugin then trusts both, as the role does, besides the talosconfig's C(ca) - so that the same
        inventory file works for every phase run as a separate job. Ignored when O(server_ca) is set, or when the folder
        holds no Talos API CA rotation.
      - When set, it also becomes the group variable C(rotate_ca_dir), so the role uses the same folder.
      - A folder encrypted at rest with ansible-vault is read with the vault secrets given to the run.
    type: path
    env:
      - name: TALOSOPS_ROTATION_DIR
  discovery_nodes:
    description:
      - Node addresses to ask for their member list when the endpoint's list holds no worker (Kubernetes discovery), in
        order; the first that is not a known member is asked. Name at least one worker.
      - Defaults to the talosconfig context's C(nodes).
    type: list
    elements: str
notes:
  - An inventory source that fails to parse is only a warning by default, and a playbook then finds no hosts. Set
    E(ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED=true) (or C(any_unparsed_is_failed) in C(ansible.cfg)) to make it an error.
  - Reading the members needs a talosconfig with any role (C(os:reader) is enough); the rotation itself needs C(os:admin).
seealso:
  - name: Talos VIP caveats
    description: Why VIPs must not be used as Talos API endpoints or node addresses.
    link: https://www.talos.dev/latest/talos-guides/network/vip/#caveats
  - name: Talos discovery
    description: The discovery service and the Kubernetes registry, and what Members lists.
    link: https://www.talos.dev/latest/talos-guides/discovery/
"""

EXAMPLES = r"""
---
# inventory.talos.yml: nodes from the current context of $TALOSCONFIG (or ~/.talos/config).
plugin: talosops.pki.talos

---
# prod.talos.yml: a given talosconfig and context, the control-plane VIP declared, a node's address pinned,
# cached for an hour.
plugin: talosops.pki.talos
talosconfig: ~/.talos/prod-config
context: prod
vips:
  - 10.5.0.10
addresses:
  cp-3: 10.5.0.4
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/talosops-inventory
cache_timeout: 3600

---
# Kubernetes discovery registry: name a worker so its member list is merged in; group by Talos version.
# The rotation folder: the same file works for every phase run as a separate job, and sets rotate_ca_dir.
plugin: talosops.pki.talos
discovery_nodes:
  - 10.5.0.5
keyed_groups:
  - key: talos_operating_system | regex_replace('[^A-Za-z0-9]+', '_')
    prefix: talos
rotation_dir: ~/.talos/rotation/prod

# Then:  ansible-playbook -i prod.talos.yml talosops.pki.rotate_talos_ca -e '{"rotate_ca_phases": ["accept"]}'
#   and later the same with ["swap"], then ["remove"].
"""

import os

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.vars import combine_vars

from ansible_collections.talosops.pki.plugins.module_utils import _client, _files, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._auth import Target
from ansible_collections.talosops.pki.plugins.module_utils._errors import TalosPKIError
from ansible_collections.talosops.pki.plugins.module_utils._inventory import (
    CONTROLPLANE,
    WORKER,
    check_endpoints,
    choose_hosts,
    endpoints_for,
    query_members,
)

try:
    from ansible.template import trust_as_template
except ImportError:  # ansible-core < 2.19 renders every inventory string as a template
    def trust_as_template(value):
        return value

try:
    from ansible.utils.unsafe_proxy import wrap_var
except ImportError:  # removed once ansible-core no longer needs it: inventory data is untrusted by default there
    def wrap_var(value):
        return value

# Bumped when the cached value's shape changes, so an old cache entry is not misread.
_CACHE_FORMAT = 1


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    """verify_file -> parse -> cached members or _query -> _populate, as amazon.aws.aws_ec2."""

    NAME = "talosops.pki.talos"
    INVENTORY_FILE_SUFFIXES = ("talos.yml", "talos.yaml")

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(self.INVENTORY_FILE_SUFFIXES)

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache=cache)
        self._read_config_data(path)
        try:
            target = Target(self._auth_params())
            self._trust_rotation(target)
            source = self._source(target)
            check_endpoints(self.get_option("endpoints"), vips=self.get_option("vips"))
            hit, result = self._cached_result(path, cache, source)
            if not hit:
                result = self._query(target, source)
                self._update_cached_result(path, cache, result)
            self._populate(result, target)
        except (TalosPKIError, ValueError) as exc:  # ValueError: an endpoint that cannot be parsed (bad port)
            raise AnsibleParserError("talosops.pki.talos inventory %s: %s" % (path, exc)) from None

    def _auth_params(self):
        params = {name: self.get_option(name) for name in ("talosconfig", "context", "endpoints", "server_ca", "call_timeout",
                                                           "retry_deadline")}
        # An empty TALOSOPS_CONTEXT (an AWX credential without a context) means the current context.
        params["context"] = params["context"] or None
        return params

    def _trust_rotation(self, target):
        """Mid-rotation the nodes serve with the old or the new CA: trust both, as the role does, besides the talosconfig's."""
        folder = self.get_option("rotation_dir")
        if not folder or self.get_option("server_ca"):
            return
        # An encrypted rotation folder is read with the vault secrets given to the run; the inventory writes nothing.
        vault = getattr(self.loader, "_vault", None)
        sealing = _files.Sealing(unseal=vault.decrypt if vault is not None and vault.secrets else None)
        rotation = _rotation_store.load(os.path.join(os.path.expanduser(folder), "talos"), kind="talos", sealing=sealing)
        if rotation is None:
            return
        cas = [rotation.previous_ca_cert(), rotation.ca_cert()]
        target.credentials = target.credentials._replace(ca=b"".join([target.credentials.ca] + cas))

    def _source(self, target):
        """What the member lists were read from: a cached result is only valid for the same source."""
        discovery_nodes = self.get_option("discovery_nodes")
        return {
            "talosconfig": target.talosconfig_path,
            "context": target.context.name,
            "endpoints": list(target.endpoints),
            "discovery_nodes": list(target.context.nodes if discovery_nodes is None else discovery_nodes),
        }

    # --- cache (honours --flush-cache and the cache option; a hit is never written back) ---------------

    def _cached_result(self, path, cache, source):
        # `cache` is False with --flush-cache (and meta: refresh_inventory): read nothing then.
        if not cache or not self.get_option("cache"):
            return False, None
        try:
            cached = self._cache[self.get_cache_key(path)]
        except KeyError:  # absent or expired
            return False, None
        if not isinstance(cached, dict) or cached.get("format") != _CACHE_FORMAT or cached.get("source") != source:
            return False, None
        return True, cached

    def _update_cached_result(self, path, cache, result):
        if not self.get_option("cache"):
            return
        # Only fresh results get here: a cache hit is not rewritten, so its lifetime is not extended.
        self._cache[self.get_cache_key(path)] = result

    # --- query and populate ------------------------------------------------------------------------------

    def _query(self, target, source):
        async def read():
            async with target.client() as client:
                return await query_members(client, source["discovery_nodes"])

        members, notes = _client.run(read())
        return {"format": _CACHE_FORMAT, "source": source, "members": members, "notes": notes}

    def _populate(self, result, target):
        members = result["members"]
        explicit_endpoints = self.get_option("endpoints")
        check_endpoints(explicit_endpoints, members, self.get_option("vips"))
        hosts, warnings = choose_hosts(members, target.endpoints, self.get_option("vips"), self.get_option("addresses"))
        for message in list(result.get("notes") or ()) + warnings:
            self.display.warning("talosops.pki.talos: %s" % message)

        self.inventory.add_group(CONTROLPLANE)
        self.inventory.add_group(WORKER)
        all_vars = {
            "talos_endpoints": endpoints_for(hosts, explicit_endpoints),
            "talos_talosconfig": target.talosconfig_path if self.get_option("talosconfig") else None,
            "talos_context": target.context.name,
            "ansible_connection": "local",
            # Our own constant, so it may be rendered: the Python running ansible-playbook has grpclib.
            "ansible_python_interpreter": trust_as_template("{{ ansible_playbook_python }}"),
        }
        if self.get_option("rotation_dir"):
            all_vars["rotate_ca_dir"] = self.get_option("rotation_dir")
        for name, value in all_vars.items():
            self.inventory.set_variable("all", name, value)

        strict = self.get_option("strict")
        for host in hosts:
            self.inventory.add_host(host.name, group=host.group)
            host_vars = {
                "talos_node_address": host.address,
                "talos_machine_type": host.member.get("machine_type"),
                "talos_member_id": host.member.get("id"),
                "talos_member_addresses": list(host.member.get("addresses") or ()),
                "talos_operating_system": host.member.get("operating_system"),
            }
            for name, value in host_vars.items():
                # Values come from the network: never templates.
                self.inventory.set_variable(host.name, name, wrap_var(value))
            variables = combine_vars(self.inventory.groups["all"].get_vars(), self.inventory.get_host(host.name).get_vars())
            self._set_composite_vars(self.get_option("compose"), variables, host.name, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), variables, host.name, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, host.name, strict=strict)
