#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: talos_machine_patch
short_description: Bring one Talos node's CA fields to the state of a rotation phase
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
extends_documentation_fragment:
  - talosops.pki._encryption
  - talosops.pki._auth
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
    type: str
    required: true
  phase:
    description:
      - Rotation phase whose state the node must reach.
    type: str
    required: true
    choices: [accept, swap, remove]
  ca:
    description:
      - Which CA the rotation replaces - the Talos API CA or the Kubernetes API CA.
      - V(service_account) rotates the service-account signing key of a Talos v1.14+ control plane instead
        (C(KubeServiceAccountConfig) C(issuer.privateKey) and C(accepted.publicKeys); fingerprints are those of the public
        keys). Workers and v1.13-shape nodes (C(cluster.serviceAccount), no accepted list) are refused before any change.
    type: str
    default: talos
    choices: [talos, kubernetes, service_account]
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
    type: bool
    default: false
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
- name: Accept the new Talos CA on this node
  talosops.pki.talos_machine_patch:
    talosconfig: "{{ talos_talosconfig }}"
    node: "{{ talos_node_address }}"
    phase: accept
    rotation_dir: /var/lib/talos-rotation/talos
    machine_type: controlplane

- name: Make the new Kubernetes CA the issuing CA (dry run shown with --check --diff)
  talosops.pki.talos_machine_patch:
    talosconfig: /var/lib/talos-rotation/talos/talosconfig
    node: 10.5.0.3
    phase: swap
    ca: kubernetes
    rotation_dir: /var/lib/talos-rotation/kubernetes
    wait_kubelet: true
    kubelet_timeout: 120
"""

RETURN = r"""
node:
  description: The node patched.
  returned: always
  type: str
  sample: 10.5.0.3
machine_type:
  description: The node's C(machine.type).
  returned: always
  type: str
  sample: controlplane
phase:
  description: The phase requested.
  returned: always
  type: str
  sample: accept
progress_before:
  description: Where the node stood - V(pending), V(accepted), V(swapped) or V(removed).
  returned: always
  type: str
  sample: pending
progress_after:
  description: Where the node stands after the patch (or would, in check mode).
  returned: always
  type: str
  sample: accepted
started:
  description: When the task started, in seconds since the epoch (UTC); with C(finished), a phase's wall time across hosts.
  returned: success
  type: float
  sample: 1795430000.125
finished:
  description: When the task finished, in seconds since the epoch (UTC).
  returned: success
  type: float
  sample: 1795430002.5
issuing_ca_fingerprint:
  description: SHA-256 fingerprint of the node's issuing CA after the patch; V(null) on a node without an issuing CA field.
  returned: always
  type: str
accepted_ca_fingerprints:
  description: SHA-256 fingerprints of the node's accepted CAs after the patch.
  returned: always
  type: list
  elements: str
stray_ca_fingerprints:
  description:
    - Accepted CAs that are neither the previous nor the new CA, found before the change (for example left by an aborted
      C(talosctl rotate-ca)). Kept, unless O(remove_stray_cas) drops them in the remove phase.
  returned: always
  type: list
  elements: str
apply_mode:
  description: The mode the node reports for the applied configuration.
  returned: changed
  type: str
  sample: no_reboot
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
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.talosops.pki.plugins.module_utils._ansible import run_module
from ansible_collections.talosops.pki.plugins.module_utils._backends import machine_patch


def main():
    run_module(machine_patch, AnsibleModule)


if __name__ == "__main__":
    main()
