#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: talos_rotation_summary
short_description: Summarise a CA rotation run - per node before and after, the state reached and the next step
version_added: 0.1.0
description:
  - Builds the end-of-run summary of a CA rotation from the run's M(talosops.pki.talos_machine_patch) results (each
    node's progress before and after each phase, and when each patch started and finished) and the preflight's reading
    of the nodes (M(talosops.pki.talos_cluster_info)), with the rotation's old and new CA read from its folder.
  - Returns the summary as data (RV(summary)) and as text lines (RV(lines)) - a headline, the state the cluster is in,
    the next step, one row per node (inventory name, address, type, progress before -> after), the CAs, the seconds of
    each phase in which a node changed, the admin credentials written with their client certificate's expiry.
  - Tells apart a run that moved nodes, one that found nothing to do (with how to start a new rotation), check mode
    (what would change; no folder shown that check mode deletes) and a run that failed (where it stopped, how to resume).
  - Reads files only and never changes anything; no private key or certificate PEM is returned.
  - Runs on the controller through its action plugin, which also reads the results named in O(result_vars) from every
    node's host.
extends_documentation_fragment:
  - talosops.pki._attributes
  - talosops.pki._attributes.info_module
options:
  kind:
    description:
      - The CA the rotation is about.
    type: str
    required: true
    choices: [talos, kubernetes]
  rotation_dir:
    description:
      - The rotation folder of that CA (RV(talosops.pki.talos_ca_generate#module:path)).
    type: path
    required: true
  throwaway:
    description:
      - The folder is a check-mode throwaway (RV(talosops.pki.talos_ca_generate#module:throwaway)) - its path and audit log
        are not shown, since they are deleted after the run.
    type: bool
    default: false
  controlplanes:
    description:
      - Addresses of the control planes, in the order to list them.
    type: list
    elements: str
    required: true
  workers:
    description:
      - Addresses of the workers.
    type: list
    elements: str
    default: []
  node_names:
    description:
      - Inventory host name of each node address; the action plugin reads O(result_vars) from these hosts.
    type: dict
    default: {}
  phases:
    description:
      - The phases this run did (V(accept), V(swap), V(remove)).
    type: list
    elements: str
    required: true
  patches:
    description:
      - Results of M(talosops.pki.talos_machine_patch) to summarise (C(node), C(phase), C(progress_before),
        C(progress_after), C(changed), C(started), C(finished)), in addition to those read through O(result_vars).
    type: list
    elements: dict
    default: []
  result_vars:
    description:
      - Names of variables registered from M(talosops.pki.talos_machine_patch) tasks, read from the host of every node in
        O(node_names) (skipped tasks are ignored). Only through the action plugin.
    type: list
    elements: str
    default: []
  preflight_nodes:
    description:
      - RV(talosops.pki.talos_cluster_info#module:nodes) of the run's preflight - the progress of a node no patch reached
        (before the first phase, or after a failure).
    type: dict
    default: {}
  failed:
    description:
      - The run failed before its end (for example called from a C(rescue) section) - the summary says where it stopped and
        how to resume.
    type: bool
    default: false
  state:
    description:
      - A state line to show instead of the one computed from the nodes' progress (for flows with states of their own).
    type: str
  next_step:
    description:
      - A next step to show instead of the one computed.
    type: str
  talosconfig:
    description:
      - The admin talosconfig written at the end (C(path), C(context), C(changed)), for example
        RV(talosops.pki.talos_ca_generate#module:talosconfig); its client certificate's expiry is shown.
    type: dict
  kubeconfig:
    description:
      - The admin kubeconfig written at the end (C(path), C(context), C(changed)), for example the result of
        M(talosops.pki.talos_kubeconfig); its client certificate's expiry is shown.
    type: dict
  show:
    description:
      - Print RV(lines) as plain text when the task runs (through the action plugin), so that no C(debug) task is needed.
    type: bool
    default: false
  notes:
    description:
      - More lines to show before the rotation folder (for example the workloads restarted).
    type: list
    elements: str
    default: []
seealso:
  - module: talosops.pki.talos_machine_patch
  - module: talosops.pki.talos_cluster_info
author:
  - talosops.pki contributors (@talosops)
"""

EXAMPLES = r"""
# After tasks that registered their talos_machine_patch results as `accepted` (see that module's first example):
- name: Summarise the run
  talosops.pki.talos_rotation_summary:
    kind: talos
    rotation_dir: /var/lib/talos-rotation/talos
    controlplanes: "{{ groups['controlplane'] | map('extract', hostvars, 'talos_node_address') }}"
    workers: "{{ groups['worker'] | map('extract', hostvars, 'talos_node_address') }}"
    node_names: "{{ dict(groups['all'] | map('extract', hostvars, 'talos_node_address') | zip(groups['all'])) }}"
    phases: [accept]
    result_vars: [accepted]
    show: true
  register: summary
  run_once: true

- name: Use it (the state the cluster is in and the next step)
  ansible.builtin.debug:
    msg: "{{ summary.summary.state }}; next: {{ summary.summary.next_step }}"
  run_once: true
"""

RETURN = r"""
lines:
  description: The summary as text, one line per item (the node table aligned in columns).
  returned: success
  type: list
  elements: str
summary:
  description:
    - C(headline), C(state) (the state the cluster is in), C(reached) (the least progress of any node - V(pending),
      V(accepted), V(swapped), V(removed)), C(next_step) (null when there is nothing to do), C(check_mode), C(failed).
    - C(nodes) - per node C(name), C(address), C(tier), C(before), C(after) (progress) and C(phases) (those that changed it).
    - C(old_ca), C(new_ca) (C(fingerprint), C(not_after)), C(phases_run), C(phase_seconds) (per phase in which a node
      changed), C(credentials) (C(what), C(path), C(changed), C(not_after)), C(rotation_dir) and C(audit_log) (null for a
      check-mode throwaway).
  returned: success
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.talosops.pki.plugins.module_utils._ansible import run_module
from ansible_collections.talosops.pki.plugins.module_utils._backends import rotation_summary


def main():
    run_module(rotation_summary, AnsibleModule)


if __name__ == "__main__":
    main()
