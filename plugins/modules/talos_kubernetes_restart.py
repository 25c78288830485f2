#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: talos_kubernetes_restart
short_description: Restart workloads once after a CA change, as kubectl rollout restart does
version_added: 0.1.0
description:
  - Pods read the cluster CA bundle when they start and keep it. After the swap of a Kubernetes CA rotation the API servers
    serve with the new CA, so API clients in pods that still hold only the old bundle fail until they are restarted.
  - For each workload of O(workloads) (DaemonSet, Deployment or StatefulSet), sets the pod template annotation
    C(kubectl.kubernetes.io/restartedAt) with a strategic merge patch, exactly what C(kubectl rollout restart) sends, and
    records the CA it restarted for in C(talosops.pki/restarted-for-<kind>-ca) (O(ca_kind)).
  - A workload whose pod template already records O(ca_fingerprint) is left alone, so a rerun restarts nothing twice.
  - Does not wait for the rollouts to finish.
extends_documentation_fragment:
  - talosops.pki._kubernetes
  - talosops.pki._attributes
  - talosops.pki._workload
attributes:
  check_mode:
    description: The patch is sent as a server-side dry run (C(dryRun=All)) - the API server validates and admits it, nothing is stored.
    support: full
  diff_mode:
    description: Before and after of the two pod template annotations of each workload.
    support: full
options:
  ca_fingerprint:
    description:
      - SHA-256 fingerprint of the new Kubernetes CA (for example RV(talosops.pki.talos_ca_generate#module:ca_fingerprint)).
        Identifies the restart, so that it happens once per CA.
    type: str
    required: true
  ca_kind:
    description:
      - The kind of CA the restart is for. Each kind is recorded in its own annotation
        (C(talosops.pki/restarted-for-<kind>-ca)), so a workload restarted after the swaps of two rotations is restarted
        once for each, and a rerun of either restarts nothing.
      - Only the entries of O(workloads) whose O(workloads[].after) names this kind are restarted.
    type: str
    default: kubernetes
    choices: [talos, kubernetes, aggregator]
  workloads:
    description:
      - Workloads to restart, in order.
    type: list
    elements: dict
    required: true
seealso:
  - module: talosops.pki.talos_kubernetes_verify
  - name: kubectl rollout restart
    description: The command whose request this module sends.
    link: https://kubernetes.io/docs/reference/kubectl/generated/kubectl_rollout/kubectl_rollout_restart/
author:
  - talosops.pki contributors (@talosops)
"""

EXAMPLES = r"""
- name: Restart the CNI and kube-proxy so they pick up the new CA bundle
  talosops.pki.talos_kubernetes_restart:
    kubeconfig: ~/.talos/rotation/kubernetes/kubeconfig
    ca_fingerprint: "{{ rotation.ca_fingerprint }}"
    workloads:
      - {namespace: kube-system, kind: daemonset, name: kube-flannel}
      - {namespace: kube-system, kind: daemonset, name: kube-proxy}
      - {namespace: kube-system, kind: deployment, name: coredns}
  run_once: true
"""

RETURN = r"""
workloads:
  description: Per workload - C(namespace), C(kind), C(name), C(changed), C(before) and C(after) (the two annotations), and
    C(dry_run) when the patch was a server-side dry run.
  returned: always
  type: list
  elements: dict
  sample: [{"namespace": "kube-system", "kind": "daemonset", "name": "kube-proxy", "changed": true,
            "before": {"kubectl.kubernetes.io/restartedAt": null, "talosops.pki/restarted-for-kubernetes-ca": null},
            "after": {"kubectl.kubernetes.io/restartedAt": "2026-01-02T03:04:05Z",
                      "talosops.pki/restarted-for-kubernetes-ca": "5f1c..."}}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.talosops.pki.plugins.module_utils._ansible import run_module
from ansible_collections.talosops.pki.plugins.module_utils._backends import kubernetes_restart


def main():
    run_module(kubernetes_restart, AnsibleModule)


if __name__ == "__main__":
    main()
