#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: talos_rotation_summary
short_description: Summarise a CA rotation run - per node before and after, seconds per wave, the state reached and the next step
version_added: 0.1.0
description:
  - Builds the end-of-run summary of a CA rotation (or of its rollback, O(rollback)) from the rotation's audit log, the
    C(audit.jsonl) of its folder - each C(node_patched) entry M(talosops.pki.talos_machine_patch) wrote says a node moved
    (progress before and after, seconds), each C(wave_patched) entry how long a wave of nodes took. Only the entries written
    since O(since) count - the entries of this run. A log without wave entries (written by an older version, one node per
    task) gives one wave per phase and node type, made of the nodes that changed.
  - In check mode nothing is written to the log; the summary then projects the preflight's reading of the nodes
    (O(preflight_nodes)) through the run's phases - where a real run would take each node.
  - Returns the summary as data (RV(summary)) and as text lines (RV(lines)) - a headline, the state the cluster is in,
    the next step, one row per node (inventory name, address, type, progress before -> after, a failed node marked), the
    CAs, the seconds of each phase and of each of its waves in which a node changed or failed, the admin credentials
    written with their client certificate's expiry.
  - With O(kind=service_account), the service-account signing key's rotation - the same phases on the control planes, the
    public keys' fingerprints and algorithms in place of the CAs, what was proven about tokens (O(old_token_refused)) and
    the legacy token Secrets signed by the old key (O(legacy_secrets)).
  - The secrets bundles (C(secrets.yaml)) this run wrote the new CA or key into are listed, from their audit entries.
  - After a failure (O(failed)), a line says which CA each node has, by progress.
  - Tells apart a run that moved nodes, one that found nothing to do (with how to start a new rotation), check mode
    (what would change; no folder shown that check mode deletes) and a run that failed (where it stopped, how to resume).
  - Reads files only and never changes anything; no private key or certificate PEM is returned. A vault-encrypted audit
    log is read with the play's vault secrets.
  - Runs on the controller through its action plugin.
extends_documentation_fragment:
  - talosops.pki._attributes
  - talosops.pki._attributes.info_module
options:
  kind:
    description:
      - The CA the rotation is about.
    type: str
    required: true
    choices: [talos, kubernetes, aggregator, service_account]
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
      - Inventory host name of each node address, shown in the rows.
    type: dict
    default: {}
  phases:
    description:
      - The phases this run did - V(accept), V(swap), V(remove); with O(rollback), V(rollback_swap), V(rollback_accept).
    type: list
    elements: str
    required: true
  since:
    description:
      - When this run started, as a UTC time (V(2026-01-02T03:04:05Z), for example the C(holder.since) of
        M(talosops.pki.talos_rotation_lock)) or epoch seconds. Audit entries written before it belong to earlier runs and
        are left out.
      - Without it, every entry of the log counts (the whole rotation so far).
    type: str
  rollback:
    description:
      - Summarise a rollback (rotate_ca_rollback) - nodes going back towards V(pending) - rather than the rotation.
    type: bool
    default: false
  rolled_back_to:
    description:
      - With O(rollback), where the rotation folder was kept (RV(talosops.pki.talos_ca_generate#module:rolled_back_to)); it
        is read from there once it exists, and shown.
    type: str
  preflight_nodes:
    description:
      - RV(talosops.pki.talos_cluster_info#module:nodes) of the run's preflight - where each node stood before this run (the
        progress of a node that did not move), and in check mode what the projection starts from.
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
  legacy_secrets:
    description:
      - With O(kind=service_account), RV(talosops.pki.talos_service_account_token#module:legacy_secrets) of its
        V(legacy_report) - the legacy token Secrets; those signed by the old key (C(signed_by_listed_key)) are listed by
        namespace and name (never their tokens).
    type: list
    elements: dict
    default: []
  old_token_refused:
    description:
      - With O(kind=service_account), every kube-apiserver was proven to refuse the token signed by the old key
        (M(talosops.pki.talos_service_account_token) with V(state=refused)).
    type: bool
    default: false
seealso:
  - module: talosops.pki.talos_machine_patch
  - module: talosops.pki.talos_cluster_info
  - module: talosops.pki.talos_rotation_lock
author:
  - talosops.pki contributors (@talosops)
"""

EXAMPLES = r"""
# After talos_machine_patch tasks of the accept phase with rotation_dir /var/lib/talos-rotation/talos (see that module's
# first example), and a preflight registered as `cluster` (talos_cluster_info's first example):
- name: Summarise the run from the rotation's audit log
  talosops.pki.talos_rotation_summary:
    kind: talos
    rotation_dir: /var/lib/talos-rotation/talos
    controlplanes: "{{ groups['controlplane'] | map('extract', hostvars, 'talos_node_address') }}"
    workers: "{{ groups['worker'] | map('extract', hostvars, 'talos_node_address') }}"
    node_names: "{{ dict(groups['all'] | map('extract', hostvars, 'talos_node_address') | zip(groups['all'])) }}"
    phases: [accept]
    preflight_nodes: "{{ cluster.nodes }}"
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
      V(accepted), V(swapped), V(removed); for a rollback the greatest), C(next_step) (null when there is nothing to do),
      C(check_mode), C(failed), C(rollback).
    - C(nodes) - per node C(name), C(address), C(tier), C(before), C(after) (progress), C(phases) (those that changed it),
      C(seconds) (its patches' time) and C(failed) (in a wave that failed).
    - C(waves) - per wave, in the order they ran, C(phase), C(machine_type), C(wave) (its number), C(nodes),
      C(changed_nodes), C(failed_nodes) (addresses), C(started), C(finished) (epoch seconds), C(seconds); empty in check mode.
    - C(old_ca), C(new_ca) (C(fingerprint), C(not_after)), C(phases_run), C(phase_seconds) (per phase in which a node
      changed - its first wave's start to its last wave's end), C(credentials) (C(what), C(path), C(changed), C(not_after)),
      C(rotation_dir) and C(audit_log) (null for a check-mode throwaway), C(rolled_back_to), C(secrets_files) (the secrets
      bundles this run updated). A service-account key has no expiry - C(not_after) is null - and an C(algorithm).
    - C(tokens) (O(kind=service_account) only) - C(old_token) (what is known of the old key's token) and
      C(legacy_secrets_of_old_key) (namespace/name).
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
