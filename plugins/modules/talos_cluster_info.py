#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: talos_cluster_info
short_description: Read the CA state of every node of a Talos cluster and check it against the inventory
version_added: 0.1.0
description:
  - Reads, concurrently through the endpoints, each node's version, C(machine.type) and the CA fields of the Talos API CA
    and the Kubernetes API CA from its active machine configuration, plus the cluster's issuing CAs and members.
  - The preflight of a rotation - fails, before anything changes, when a node is unreachable, a node's type disagrees
    with its inventory group, a node is listed twice, a node runs Talos older than v1.7, or (with O(rotation_dirs)) a
    node's CAs belong to neither side of the rotation in progress.
  - With O(prefer_talosconfig), uses that talosconfig (the rotation's new admin credentials) when the endpoint already
    trusts it, else O(talosconfig); returns which one worked, so a resumed rotation continues with working credentials.
  - With O(kubelet_health), also reads every node's kubelet service and fails the preflight when one is not running and
    healthy within O(kubelet_deadline) - a Kubernetes CA rotation restarts every kubelet and must start on a healthy cluster.
  - Refuses a cluster member (as the endpoint and, with O(workers), the first worker list them - with Kubernetes discovery a
    control plane lists only control planes) that the inventory does not list, since the rotation would lock it out.
  - Refuses a shared virtual IP that a control plane's configuration declares (C(vip.ip) of an interface or VLAN, or a
    C(Layer2VIPConfig) / C(HCloudVIPConfig) document) when it is given as a node or as an endpoint - it reaches whichever
    control plane holds it (siderolabs/talos#10357) - and one cluster member listed under two of its addresses.
  - Refuses an inventory that mixes two clusters' nodes, naming them - nodes the endpoint cannot reach over mutual TLS
    that are not members of its cluster and do not trust its Talos API CA, nodes whose configs declare different cluster
    ids, and nodes it can read that its cluster's discovery does not list.
  - Warns about stray accepted CAs (see RV(stray_cas)); they are not an error.
  - Returns fingerprints and public certificates only, never key material.
extends_documentation_fragment:
  - talosops.pki._auth
  - talosops.pki._auth.action_group
  - talosops.pki._attributes
  - talosops.pki._attributes.info_module
options:
  controlplanes:
    description:
      - Addresses of the control-plane nodes, as the inventory lists them.
    type: list
    elements: str
    required: true
  workers:
    description:
      - Addresses of the worker nodes, as the inventory lists them.
    type: list
    elements: str
    default: []
  prefer_talosconfig:
    description:
      - Talosconfig to try first; ignored when missing or refused by the endpoint.
    type: path
  rotation_dirs:
    description:
      - Rotation directories, by CA kind (C(talos), C(kubernetes)). Each node's progress in a rotation found there is
        reported; where none exists yet, every node must issue with the same CA as the endpoint, or the preflight fails.
      - C(service_account) (a service-account key rotation) checks the control planes only - each must carry a
        C(KubeServiceAccountConfig) document (Talos v1.14+; older shapes are refused with the upgrade hint) and sign with the
        first control plane's key, or one side of the rotation in progress.
    type: dict
    default: {}
  concurrency:
    description:
      - How many nodes are read at once.
    type: int
    default: 64
  kubelet_health:
    description:
      - Read the kubelet service (C(Services.v1alpha1.talos.dev/kubelet)) of every node; each must be running and healthy.
    type: bool
    default: false
  kubelet_deadline:
    description:
      - Seconds a kubelet that is not running and healthy yet (for example still restarting after an earlier change) gets
        to become so, polled every half second.
    type: float
    default: 60.0
  require_progress:
    description:
      - Maps a CA kind (V(talos), V(kubernetes), V(service_account)) to the progress every node must have reached in that kind's rotation
        (V(pending), V(accepted), V(swapped), V(removed)), read from the nodes' live CA fields against O(rotation_dirs).
      - For phases run as separate jobs - a job that starts with the swap phase requires V(accepted), one that starts
        with the remove phase V(swapped) - so that a job never runs a phase whose predecessor has not happened on every node.
      - A node behind, or no rotation in the kind's rotation directory, fails the preflight naming the nodes and the phase to run.
    type: dict
    default: {}
  secrets_file:
    description:
      - A C(talosctl gen secrets) bundle that the rotation will update at its end. Checked now, so that a wrong file stops
        the rotation before any change - it must parse and hold, for each kind of O(rotation_dirs), the cluster's current CA
        or the CAs of that kind's rotation.
    type: path
  kubeconfig:
    description:
      - A kubeconfig that the Kubernetes API CA rotation will merge the new credentials into at its end. When it exists it must
        parse now, so that an unusable file stops the rotation before any change.
    type: path
  remove_stray_cas:
    description:
      - Whether the rotation will drop stray accepted CAs (see RV(stray_cas)) in its remove phase; only changes what the
        warning about them says.
    type: bool
    default: false
  node_names:
    description:
      - Inventory host name of each node address, to name nodes in refusals and warnings as C(name (address)), for
        example C(10.5.0.2) to C(cp-1). Addresses not listed are named by address alone.
    type: dict
    default: {}
  rollback:
    description:
      - The run will roll back the rotations of O(rotation_dirs). Fails (before any change) when a node of one of them is past
        the remove phase (it no longer accepts the CA being replaced), or when control planes issue with the new CA and the
        rotation directory holds no key of the CA being replaced.
    type: bool
    default: false
notes:
  - A refusal's message leads with the problems found (what is wrong, on which nodes, what to do). The nodes' CA state read
    by the preflight is returned with it as RV(details), without any certificate; through the action plugin (the
    default) it is shown only from C(-v) on.
author:
  - talosops.pki contributors (@talosops)
"""

EXAMPLES = r"""
- name: Preflight, with each node's progress in the rotation kept in /var/lib/talos-rotation/talos
  talosops.pki.talos_cluster_info:
    talosconfig: ~/.talos/config
    controlplanes: [10.5.0.2, 10.5.0.3, 10.5.0.4]
    workers: [10.5.0.5, 10.5.0.6]
    rotation_dirs:
      talos: /var/lib/talos-rotation/talos
  register: cluster
  run_once: true

- name: Preflight of a job that runs the swap phase only (the accept phase ran in an earlier job)
  talosops.pki.talos_cluster_info:
    controlplanes: [10.5.0.2, 10.5.0.3, 10.5.0.4]
    workers: [10.5.0.5, 10.5.0.6]
    rotation_dirs:
      talos: /var/lib/talos-rotation/talos
    require_progress:
      talos: accepted
  register: cluster
  run_once: true

- name: Show each node's progress (reported with rotation_dirs, once the rotation folder holds a new CA)
  ansible.builtin.debug:
    msg: "{{ cluster.nodes | dict2items | map(attribute='value.talos.progress', default='no rotation yet') }}"
  run_once: true
"""

RETURN = r"""
nodes:
  description: Per node address - C(hostname) (when known, from Version or else the member that lists the address),
    C(talos_version), C(machine_type), C(kubernetes_ca_location), C(aggregator_ca_location) and C(service_account_location)
    (the v1.14+ document, the legacy v1alpha1 field, or V(null)); on control planes
    with a C(KubeAggregatorCAConfig) document C(aggregator) (C(issuing_ca), C(issuing_ca_crt), C(accepted_cas)); C(cluster_name),
    C(cluster_id) (a digest of the config's cluster id, not the id itself), and for C(talos)
    and C(kubernetes) the C(issuing_ca) fingerprint (V(null) on a node without an issuing CA field, such as the Kubernetes CA
    of a v1.14+ worker), C(accepted_cas) fingerprints and, with O(rotation_dirs), C(progress); C(virtual_ips) its
    configuration declares; with O(kubelet_health), C(kubelet) (C(running), C(healthy)); C(service_account) - C(location)
    (V(KubeServiceAccountConfig), V(cluster.serviceAccount) or V(null) on workers), the signing key's public-key fingerprint
    as C(issuing_ca), the accepted public keys' as C(accepted_cas) and, with a service_account rotation, C(progress).
  returned: always
  type: dict
service_account:
  description: The first control plane's service-account signing key - C(fingerprint) (SHA-256 of the public key's DER) and
    C(public_key) (hex of the public key's DER - not base64, which would repeat lines of the private key's PEM; never the
    private key). V(null) when it has no KubeServiceAccountConfig document.
  returned: always
  type: dict
issuing_ca:
  description: The cluster's issuing CAs as an endpoint reports them (C(talos), C(kubernetes)) - C(crt) (PEM certificate),
    C(fingerprint), C(subject), C(not_after), C(key_type).
  returned: always
  type: dict
members:
  description: Cluster members an endpoint knows (C(hostname), C(addresses), C(machine_type)).
  returned: always
  type: list
  elements: dict
stray_cas:
  description:
    - Per CA kind (those of O(rotation_dirs), else both), the accepted CAs that are neither the current nor the new CA -
      C(fingerprint), C(subject), C(not_after) and the C(nodes) that accept it - for example left by an aborted
      C(talosctl rotate-ca), which makes a new CA on every run. Each kind with any is also reported as a warning. Not an
      error - the rotation keeps them unless told to remove them.
  returned: always
  type: dict
  sample: {"talos": [{"fingerprint": "3f2a...", "subject": "O=talos", "not_after": "2035-11-20T10:00:00Z", "nodes": ["10.5.0.2"]}]}
problems:
  description: When the preflight refuses the rotation - each problem found, one sentence or two naming the nodes and what to do.
  returned: failure
  type: list
  elements: str
details:
  description: When the preflight refuses the rotation - what it read (C(nodes), C(members), C(stray_cas), C(issuing_ca)
    without the PEM certificate, C(talosconfig_used), C(endpoints)); from C(-v) on with the action plugin.
  returned: failure
  type: dict
talosconfig:
  description: Path of the talosconfig resolved from O(talosconfig) (or E(TALOSCONFIG), or C(~/.talos/config)).
  returned: always
  type: str
context:
  description: Name of the talosconfig context used.
  returned: always
  type: str
talosconfig_used:
  description: Path of the talosconfig whose credentials worked - O(prefer_talosconfig) or RV(talosconfig).
  returned: always
  type: str
endpoints:
  description: Endpoints used.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.talosops.pki.plugins.module_utils._ansible import run_module
from ansible_collections.talosops.pki.plugins.module_utils._backends import cluster_info


def main():
    run_module(cluster_info, AnsibleModule)


if __name__ == "__main__":
    main()
