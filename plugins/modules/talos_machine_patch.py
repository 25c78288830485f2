#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: talos_machine_patch
short_description: Bring Talos nodes' CA fields to the state of a rotation phase, one node or waves of nodes
version_added: 0.1.0
description:
  - Reads the node's active machine configuration through the Talos API, brings the CA fields of one CA to the state of
    one phase of a rotation from the previous CA to the new CA of O(rotation_dir), and applies the configuration with
    mode C(NO_REBOOT) only when something changes.
  - "Phases, as upstream C(talosctl rotate-ca): V(accept) adds the new CA to the accepted CAs; V(swap) makes the new CA
    the issuing CA (with its key on control planes, certificate only on workers) and keeps the previous CA accepted;
    V(remove) drops the previous CA from the accepted CAs."
  - Where the node stands is read from its live CA fields (fingerprints), so a phase only ever moves a node forward and a
    rerun after an interruption continues where the node is. A node further along is left alone; V(remove) on a node that
    has not swapped is refused. Accepted CAs that are neither the previous nor the new CA are kept and reported.
  - Only the rotation's fields change (C(machine.ca), C(machine.acceptedCAs), C(cluster.ca), C(cluster.acceptedCAs), or
    the C(KubeAPIServerCAConfig) document); comments, other documents and every other value stay byte for byte.
  - A node without an issuing CA field keeps that shape - a Talos v1.14+ worker carries the Kubernetes CA only as
    C(KubeAPIServerCAConfig.acceptedCAs). Its progress is read from that list, where the CA in the issuing role comes first -
    V(accept) appends the new CA, V(swap) puts the new CA first and the previous CA last, V(remove) drops the previous CA.
  - Refuses a Talos CA change after which the node would no longer trust the client certificate in use.
  - With O(wait_kubelet) (Kubernetes CA only), watches the node's kubelet service from before the change, waits for it to
    be running and healthy, applies, then waits until the kubelet has restarted and is running and healthy again, within
    O(kubelet_timeout). Talos restarts the kubelet whenever the node's Kubernetes CA bundle changes.
  - "With O(nodes) instead of O(node), one task patches many nodes in waves: O(wave_size) nodes at a time, in the given
    order, the nodes of a wave concurrently (at most O(concurrency) in flight) through one connection to the endpoints. The
    next wave starts only when every node of the wave succeeded. When nodes of a wave fail, the task fails naming every one
    of them (inventory name from O(node_names), and address) with its reason, reports the nodes that did succeed in
    RV(nodes), and starts no further wave; a rerun resumes from the nodes' live state."
extends_documentation_fragment:
  - talosops.pki._encryption
  - talosops.pki._auth
  - talosops.pki._auth.action_group
  - talosops.pki._attributes
attributes:
  check_mode:
    description: The changed configuration is sent as an ApplyConfiguration dry run; the node validates it and returns its summary, nothing
      changes and no kubelet restarts (so nothing is waited for).
    support: full
  diff_mode:
    description: Before and after of the node's CA fields (fingerprints, subjects, expiry); keys show as V(<redacted>).
    support: full
options:
  node:
    description:
      - Address of the node to patch (IP or host name as the endpoints know it).
      - Exactly one of O(node) and O(nodes) is required.
    type: str
  nodes:
    description:
      - Addresses of the nodes to patch in waves, in this order (control planes before workers are separate tasks).
      - Every node is checked against O(machine_type). Each changed node gets its C(node_patched) entry in the audit log as
        soon as it is patched, and each wave a C(wave_patched) entry (not in check mode).
      - Exactly one of O(node) and O(nodes) is required.
    type: list
    elements: str
  node_names:
    description:
      - Inventory name of each node address, used in messages (C(name (address))) and as C(name) in RV(nodes).
      - Nodes missing from it are named by their address.
    type: dict
    default: {}
  wave_size:
    description:
      - With O(nodes), how many nodes make one wave; V(0) puts every node in one wave.
      - With O(claim), the first node is patched alone first, with the claim, then the other nodes in waves.
    type: int
    default: 0
  concurrency:
    description:
      - With O(nodes), at most this many nodes of a wave are patched at once (kubelet waits included).
    type: int
    default: 50
  phase:
    description:
      - Rotation phase whose state the node must reach.
      - V(rollback_swap) and V(rollback_accept) take the node back towards the previous CA alone - the previous CA issues
        again with the new one still accepted, then the new CA is dropped. They only move a node backward, and refuse a node
        that no longer accepts the previous CA (the remove phase ran there). On a control plane the swap back issues with
        the previous CA's key kept in O(rotation_dir) by M(talosops.pki.talos_ca_generate).
    type: str
    required: true
    choices: [accept, swap, remove, rollback_swap, rollback_accept]
  ca:
    description:
      - Which CA the rotation replaces - the Talos API CA, the Kubernetes API CA, or the aggregator (front-proxy) CA.
      - V(aggregator) edits the C(KubeAggregatorCAConfig) document (Talos v1.14+, control planes only); a node without it
        (C(cluster.aggregatorCA), no accepted list) is refused with the upgrade hint, never swapped.
      - V(service_account) rotates the service-account signing key of a Talos v1.14+ control plane instead
        (C(KubeServiceAccountConfig) C(issuer.privateKey) and C(accepted.publicKeys); fingerprints are those of the public
        keys). Workers and v1.13-shape nodes (C(cluster.serviceAccount), no accepted list) are refused before any change.
    type: str
    default: talos
    choices: [talos, kubernetes, aggregator, service_account]
  rotation_dir:
    description:
      - Rotation directory written by M(talosops.pki.talos_ca_generate) for this CA; gives the previous and the new CA.
      - Every change applied to a node is appended to its C(audit.jsonl) (time, node, phase, progress, fingerprints).
    type: path
    required: true
  machine_type:
    description:
      - The node's type according to the inventory. When set, a node whose C(machine.type) disagrees is refused before any change.
      - C(init) nodes count as V(controlplane).
    type: str
    choices: [controlplane, worker]
  apply_mode:
    description:
      - ApplyConfiguration mode. CA fields apply without reboot; the REBOOT mode is never sent.
    type: str
    default: no_reboot
    choices: [no_reboot, auto]
  wait_kubelet:
    description:
      - Wait for the node's kubelet to restart and come back running and healthy after the change (O(ca=kubernetes) only).
      - Skipped in check mode, when nothing changes, and when the change leaves the node's CA bundle (accepted CAs, then
        the issuing CA) as it was.
    type: bool
    default: false
  kubelet_timeout:
    description:
      - Seconds the kubelet gets, before the change to be running and healthy, and after it to restart and be running and
        healthy again. On timeout the task fails naming the node and the phase.
    type: float
    default: 300.0
  remove_stray_cas:
    description:
      - With O(phase=remove), also drop the accepted CAs that are neither the previous nor the new CA (strays, for example
        left by an aborted C(talosctl rotate-ca), which makes a new CA on every run), so that the new CA alone remains -
        also on a node that had already reached the removed state. Clients whose certificates a stray CA issued are
        refused afterwards.
      - V(false) keeps strays in every phase and reports them in RV(stray_ca_fingerprints).
      - With O(claim), the marked CA of an abandoned rotation already on the node does not stop the claim.
    type: bool
    default: false
  rotation_lock:
    description:
      - The folder whose C(rotation.lock) this run holds (O(talosops.pki.talos_rotation_lock#module:path)). The task then
        applies only for the ansible-playbook process holding that lock, and holds a shared lock on the folder's
        C(rotation.appliers) while it runs, so that the run's lock is not released before the task has ended, even
        when ansible-playbook is killed. The role C(rotate_ca) sets it to its C(rotate_ca_dir).
      - With or without it, the task stops once the ansible-playbook process that runs it has ended (SIGKILL, SIGHUP,
        an AWX cancel) - its process is killed at once, and each ApplyConfiguration attempt (retries included) is
        preceded by a check - so that no configuration is applied for a run that is gone. Without it, the process the
        task runs under stands for ansible-playbook (true in the action plugin, which is what runs this module).
      - Linux controllers only (C(/proc), C(pidfd), C(flock)). Not used in check mode, which changes nothing.
    type: path
  claim:
    description:
      - With O(phase=accept), this patch claims the cluster for the rotation - the role makes it on the first control
        plane, before any other node. It is refused, changing nothing, when the node already carries the CA of another
        rotation of the same CA (read from the rotation marker of the CAs). After applying, it waits O(claim_settle)
        seconds and reads the node again. If another run's CA created first is there too, or another run's apply replaced
        the configuration this one applied, this run lost - it takes its CA off the node again, moves its rotation folder to
        C(<rotation_dir>.withdrawn-<UTC time>) and fails, naming the winner. If it won, it waits up to O(claim_deadline)
        seconds for the losers' runs to take their CAs off, then goes on (a CA still there is kept as a stray, with a warning).
      - Ignored in check mode.
    type: bool
    default: false
  claim_settle:
    description:
      - Seconds between the claiming patch and reading the node again, longer than one apply takes.
    type: float
    default: 2.0
  claim_deadline:
    description:
      - Seconds a claim that won waits for the CAs of the runs that lost to leave the node.
    type: float
    default: 60.0
seealso:
  - module: talosops.pki.talos_ca_generate
  - module: talosops.pki.talos_verify
  - name: Talos CA rotation
    description: Upstream manual procedure.
    link: https://www.talos.dev/latest/advanced/ca-rotation/
author:
  - talosops.pki contributors (@talosops)
"""

EXAMPLES = r"""
- name: Accept the new Talos CA on this node (a play for the control planes first, then one for the workers)
  talosops.pki.talos_machine_patch:
    talosconfig: "{{ talos_talosconfig }}"
    node: "{{ talos_node_address }}"
    phase: accept
    rotation_dir: /var/lib/talos-rotation/talos
    machine_type: "{{ 'controlplane' if inventory_hostname in groups['controlplane'] else 'worker' }}"
    # Taken before by talosops.pki.talos_rotation_lock with path /var/lib/talos-rotation
    rotation_lock: /var/lib/talos-rotation
  register: accepted

- name: Make the new Kubernetes CA the issuing CA (dry run shown with --check --diff)
  talosops.pki.talos_machine_patch:
    talosconfig: /var/lib/talos-rotation/talos/talosconfig
    node: 10.5.0.3
    phase: swap
    ca: kubernetes
    rotation_dir: /var/lib/talos-rotation/kubernetes
    wait_kubelet: true
    kubelet_timeout: 120

- name: Roll back - make the previous Talos CA the issuing CA again, the new one still accepted
  talosops.pki.talos_machine_patch:
    talosconfig: /var/lib/talos-rotation/talos/previous-talosconfig
    server_ca:
      - /var/lib/talos-rotation/talos/previous-ca.crt
      - /var/lib/talos-rotation/talos/ca.crt
    node: 10.5.0.3
    phase: rollback_swap
    rotation_dir: /var/lib/talos-rotation/talos

- name: Make the new Talos CA the issuing CA on every worker in one task, in waves of 20
  talosops.pki.talos_machine_patch:
    talosconfig: /var/lib/talos-rotation/talos/talosconfig
    nodes: "{{ groups['worker'] | map('extract', hostvars, 'talos_node_address') }}"
    node_names: "{{ dict(groups['worker'] | map('extract', hostvars, 'talos_node_address') | zip(groups['worker'])) }}"
    machine_type: worker
    phase: swap
    rotation_dir: /var/lib/talos-rotation/talos
    wave_size: 20
    rotation_lock: /var/lib/talos-rotation
  run_once: true
  register: swapped

- name: Show how long each wave took
  ansible.builtin.debug:
    msg: "{{ swapped.waves | map(attribute='seconds') }}"
  run_once: true
"""

RETURN = r"""
node:
  description: The node patched.
  returned: with O(node)
  type: str
  sample: 10.5.0.3
machine_type:
  description: The node's C(machine.type).
  returned: with O(node)
  type: str
  sample: controlplane
phase:
  description: The phase requested.
  returned: always
  type: str
  sample: accept
progress_before:
  description: Where the node stood - V(pending), V(accepted), V(swapped) or V(removed).
  returned: with O(node)
  type: str
  sample: pending
progress_after:
  description: Where the node stands after the patch (or would, in check mode).
  returned: with O(node)
  type: str
  sample: accepted
started:
  description: When the task started, in seconds since the epoch (UTC); with C(finished), a phase's wall time across hosts.
  returned: with O(node), on success
  type: float
  sample: 1795430000.125
finished:
  description: When the task finished, in seconds since the epoch (UTC).
  returned: with O(node), on success
  type: float
  sample: 1795430002.5
issuing_ca_fingerprint:
  description: SHA-256 fingerprint of the node's issuing CA after the patch; V(null) on a node without an issuing CA field.
  returned: with O(node)
  type: str
accepted_ca_fingerprints:
  description: SHA-256 fingerprints of the node's accepted CAs after the patch.
  returned: with O(node)
  type: list
  elements: str
stray_ca_fingerprints:
  description:
    - Accepted CAs that are neither the previous nor the new CA, found before the change (for example left by an aborted
      C(talosctl rotate-ca)). Kept, unless O(remove_stray_cas) drops them in the remove phase.
  returned: with O(node)
  type: list
  elements: str
apply_mode:
  description: The mode the node reports for the applied configuration.
  returned: changed
  type: str
  sample: no_reboot
claim:
  description: With O(claim) - the C(node) claimed and C(rivals_waited_for), the fingerprints of the CAs of runs that lost
    the race and were still on the node after the claim (empty when there were none); C(warning) when one of them stayed.
  returned: when O(claim=true), outside check mode
  type: dict
kubelet:
  description: The kubelet's restart after the change - C(restarted), C(seconds) it took, C(transitions) seen (V(stopped),
    V(running (not healthy yet)), V(running and healthy)).
  returned: when O(wait_kubelet) waited for a restart
  type: dict
  sample: {"restarted": true, "seconds": 3.1, "transitions": ["stopped", "running (not healthy yet)", "running and healthy"]}
dry_run_summary:
  description: The node's dry-run summary, with the configuration diff it computed (secrets masked by the node).
  returned: changed and in check mode
  type: str
nodes:
  description:
    - With O(nodes), one result per node that was patched (or found already done), in the order of O(nodes) - the keys of
      the one-node result (C(node), C(machine_type), C(phase), C(progress_before), C(progress_after),
      C(issuing_ca_fingerprint), C(accepted_ca_fingerprints), C(stray_ca_fingerprints), C(changed), C(apply_mode),
      C(kubelet), C(claim), C(dry_run_summary), C(warnings)) plus C(name) (inventory name), C(started), C(finished) and
      C(seconds).
    - Nodes that failed, or that were not started because an earlier wave failed, are not in it.
  returned: with O(nodes)
  type: list
  elements: dict
  sample: [{"node": "10.5.0.5", "name": "worker-1", "phase": "swap", "progress_before": "accepted", "progress_after": "swapped",
            "changed": true, "seconds": 0.31}]
waves:
  description: With O(nodes), the waves started, in order - C(nodes) (addresses), C(started), C(finished) (seconds since
    the epoch), C(seconds) and C(changed_nodes).
  returned: with O(nodes)
  type: list
  elements: dict
  sample: [{"nodes": ["10.5.0.5", "10.5.0.6"], "started": 1795430000.1, "finished": 1795430000.4, "seconds": 0.3,
            "changed_nodes": ["10.5.0.5", "10.5.0.6"]}]
changed_nodes:
  description: With O(nodes), the addresses of the nodes changed (or that would change, in check mode).
  returned: with O(nodes)
  type: list
  elements: str
failed_nodes:
  description: With O(nodes), the addresses of the nodes that failed (the task then fails, naming each one and why).
  returned: with O(nodes)
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.talosops.pki.plugins.module_utils._ansible import run_module
from ansible_collections.talosops.pki.plugins.module_utils._backends import machine_patch


def main():
    run_module(machine_patch, AnsibleModule)


if __name__ == "__main__":
    main()
