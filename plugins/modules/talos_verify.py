#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: talos_verify
short_description: Prove that Talos credentials reach nodes, or that nodes refuse them
version_added: 0.1.0
description:
  - Calls Version on every node of O(nodes) concurrently, through the endpoints with the C(node) header (as C(talosctl -n)
    does) or directly with O(direct=true), each call on a fresh connection so it sees the node's current trust.
  - With O(expect=reachable), every node must answer with these credentials (client certificate and server CA bundle).
    Failures are retried until O(deadline), since a node refreshes its certificates shortly after a CA change.
  - With O(expect=refused), every node must refuse the client certificate (unknown authority). Any other failure, such as
    a node being unreachable, proves nothing and fails the check. Through an endpoint only the endpoint's trust is tested;
    use O(direct=true) to prove it for every node.
  - Never changes anything; reports per node.
extends_documentation_fragment:
  - talosops.pki._auth
  - talosops.pki._auth.action_group
  - talosops.pki._attributes
  - talosops.pki._attributes.info_module
options:
  nodes:
    description:
      - Addresses of the nodes to check.
    type: list
    elements: str
    required: true
  expect:
    description:
      - V(reachable) - the credentials must work on every node. V(refused) - every node must refuse the client certificate.
    type: str
    default: reachable
    choices: [reachable, refused]
  direct:
    description:
      - Connect to each node itself instead of going through the endpoints. Needs TCP 50000 of every node reachable from the
        controller (not the case behind a firewall that only opens the control planes).
    type: bool
    default: false
  deadline:
    description:
      - Seconds each node has to prove the expectation, retries included.
    type: float
    default: 60.0
  retry_interval:
    description:
      - Seconds between two tries on one node.
    type: float
    default: 0.5
  concurrency:
    description:
      - How many nodes are checked at once.
    type: int
    default: 64
  prove_roles:
    description:
      - With O(expect=reachable), also prove that every node gives the client certificate exactly the Talos roles it carries
        (its Subject Organization values) - Version must be allowed to os:admin, os:operator and os:reader and denied to any
        other role set, and ApplyConfiguration allowed to os:admin only. An os:admin certificate proves it with a dry-run apply
        of the node's own configuration (nothing changes); any other one must be refused a dry-run apply (PermissionDenied).
    type: bool
    default: false
seealso:
  - module: talosops.pki.talos_machine_patch
author:
  - talosops.pki contributors (@talosops)
"""

EXAMPLES = r"""
- name: The new client certificate works on every node while they still serve with the old CA
  talosops.pki.talos_verify:
    talosconfig: /var/lib/talos-rotation/talos/talosconfig
    server_ca: [/var/lib/talos-rotation/talos/previous-ca.crt, /var/lib/talos-rotation/talos/ca.crt]
    # Parentheses: a filter binds tighter than +, so without them the control planes would be passed as host names.
    nodes: "{{ (groups['controlplane'] + groups['worker']) | map('extract', hostvars, 'talos_node_address') }}"
  run_once: true

- name: The old talosconfig is refused by every node
  talosops.pki.talos_verify:
    talosconfig: /var/lib/talos-rotation/talos/previous-talosconfig
    # Trust the nodes' new server certificates, so that what is judged is the old client certificate.
    server_ca: [/var/lib/talos-rotation/talos/ca.crt]
    nodes: [10.5.0.2, 10.5.0.3, 10.5.0.4]
    expect: refused
    direct: true
  run_once: true
"""

RETURN = r"""
expect:
  description: The expectation checked.
  returned: always
  type: str
  sample: reachable
nodes:
  description: Per node - C(ok), and C(version) and C(hostname) when reachable, C(refused) when refused, C(error) when not
    proven, and C(seconds) it took. With O(prove_roles), C(roles) and what the node did with C(version) and C(apply)
    (V(allowed) or V(denied)) instead of the version.
  returned: always
  type: dict
  sample: {"10.5.0.2": {"ok": true, "version": "v1.13.4", "hostname": "cp-1", "seconds": 0.04}}
ok_count:
  description: Nodes that proved the expectation.
  returned: always
  type: int
failed_nodes:
  description: Nodes that did not, sorted.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.talosops.pki.plugins.module_utils._ansible import run_module
from ansible_collections.talosops.pki.plugins.module_utils._backends import verify


def main():
    run_module(verify, AnsibleModule)


if __name__ == "__main__":
    main()
