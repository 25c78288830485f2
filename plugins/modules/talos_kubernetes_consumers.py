#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: talos_kubernetes_consumers
short_description: List what the Kubernetes API shows still trusting or holding the CA or key a rotation takes away
version_added: 0.1.0
description:
  - Run after the swap of a rotation, with that rotation's folder (O(rotation_dir)); what is looked for depends on its kind.
  - Talos API CA - Talos' C(talos.dev/v1alpha1) ServiceAccounts (Talos API access from Kubernetes, enabled by
    C(machine.features.kubernetesTalosAPIAccess)). Talos rewrites the talosconfig in each one's Secret when its issuing CA
    changes; the pods that mount or read that Secret are listed with their workload, as they may keep the old talosconfig
    until they are restarted.
  - Talos API, Kubernetes API and aggregator CA - APIServices (C(spec.caBundle)) and validating and mutating webhooks
    (C(clientConfig.caBundle)) whose CA bundle holds the CA being rotated out, compared by certificate fingerprint.
  - Kubernetes API and aggregator CA - the aggregated API servers (APIServices backed by a Service) with their Available
    condition; they read the client and front-proxy CA bundles of C(kube-system/extension-apiserver-authentication), many
    only when they start.
  - Service-account key - the legacy token Secrets (C(kubernetes.io/service-account-token)) signed by the old key, which
    the kubelet never refreshes.
  - Reports names, fingerprints and conditions only, never the content of a Secret. Never changes anything.
extends_documentation_fragment:
  - talosops.pki._kubernetes
  - talosops.pki._attributes
  - talosops.pki._attributes.info_module
  - talosops.pki._workload.restart_workloads
options:
  rotation_dir:
    description:
      - The folder of the rotation whose consumers to list (for example C(~/.talos/rotation/talos)), as
        M(talosops.pki.talos_ca_generate) made it. Its kind decides what is looked for; the CA or key it replaces is the
        old material.
    type: path
    required: true
  wait_for_talos_secrets:
    description:
      - Talos API CA rotations - seconds to wait until Talos has rewritten the Secret of every C(talos.dev) ServiceAccount
        (that it does not refuse) for the new CA, so that a restart after this task gives the pods the new talosconfig.
        V(0) reads them once.
    type: float
    default: 0.0
  retry_interval:
    description: Seconds between two reads of those Secrets while waiting.
    type: float
    default: 1.0
  restart_workloads:
    description:
      - The workloads the operator restarts (the role's C(rotate_ca_kubernetes_restart_workloads)). Each pod reported
        gets C(restart_listed) - whether its workload is one of them; a workload counts as listed only for the rotations
        its C(after) names.
    type: list
    elements: dict
    default: []
seealso:
  - module: talosops.pki.talos_kubernetes_restart
  - module: talosops.pki.talos_service_account_token
  - name: Talos API access from Kubernetes
    description: The talos.dev ServiceAccount resource whose Secrets Talos rewrites after a Talos API CA rotation.
    link: https://www.talos.dev/latest/advanced/talos-api-access-from-k8s/
author:
  - talosops.pki contributors (@talosops)
"""

EXAMPLES = r"""
- name: After the swap of the Talos API CA, list the pods that read a Talos API talosconfig from a Secret
  talosops.pki.talos_kubernetes_consumers:
    kubeconfig: ~/.kube/config
    rotation_dir: /var/lib/talos-rotation/talos
    # Wait up to a minute for Talos to rewrite the talos.dev ServiceAccount Secrets for the new CA.
    wait_for_talos_secrets: 60
  register: consumers
  run_once: true

- name: Print them, one line each
  ansible.builtin.debug:
    msg: "{{ consumers.lines }}"
  run_once: true

- name: After the swap of the Kubernetes API CA, webhooks and APIServices whose caBundle holds the old CA
  talosops.pki.talos_kubernetes_consumers:
    kubeconfig: ~/.talos/rotation/kubernetes/kubeconfig
    rotation_dir: ~/.talos/rotation/kubernetes
    restart_workloads:
      - {namespace: kube-system, kind: deployment, name: metrics-server}
  run_once: true
"""

RETURN = r"""
kind:
  description: The rotation's kind - V(talos), V(kubernetes), V(aggregator) or V(service_account).
  returned: always
  type: str
  sample: talos
previous_fingerprint:
  description: SHA-256 fingerprint of the CA (or public key) being rotated out.
  returned: always
  type: str
new_fingerprint:
  description: SHA-256 fingerprint of the rotation's new CA (or public key).
  returned: always
  type: str
talos_service_accounts:
  description:
    - Talos API CA rotations - each C(talos.dev) ServiceAccount - C(namespace), C(name), C(roles), C(failure_reason) (its
      status), C(secret) (which CA the talosconfig in its Secret carries - V(new), V(previous), V(other), V(missing); only
      its CA is read), and C(pods) - each C(namespace), C(name), C(started), C(workload) (C(namespace), C(kind), C(name), or null
      for a bare pod or a Job) and C(restart_listed).
  returned: always
  type: list
  elements: dict
  sample: [{"namespace": "kube-system", "name": "talos-ccm", "roles": ["os:reader"], "failure_reason": null, "secret": "new",
            "pods": [{"namespace": "kube-system", "name": "talos-ccm-7d9f8-abcde", "started": "2026-01-02T03:04:05Z",
                      "workload": {"namespace": "kube-system", "kind": "deployment", "name": "talos-ccm"},
                      "restart_listed": false}]}]
ca_bundles:
  description:
    - The CA bundles holding the CA being rotated out - C(kind) (V(APIService), V(ValidatingWebhookConfiguration),
      V(MutatingWebhookConfiguration)), C(name), C(webhook) (the webhook's name, null for an APIService),
      C(holds_new_ca), C(certificates) (how many the bundle holds).
  returned: always
  type: list
  elements: dict
aggregated_apis:
  description:
    - Kubernetes API and aggregator CA rotations - each APIService backed by a Service - C(name), C(service)
      (namespace/name), C(available) (V(True), V(False), V(Unknown)), C(reason), C(message).
  returned: always
  type: list
  elements: dict
legacy_token_secrets:
  description:
    - Service-account key rotations - the legacy token Secrets signed by the old key - C(namespace), C(name),
      C(service_account), C(key_fingerprint). Never the token.
  returned: always
  type: list
  elements: dict
lines:
  description: One plain line per consumer, saying what to do; one line saying nothing was found otherwise.
  returned: always
  type: list
  elements: str
notes:
  description: One short line counting the consumers found, for the rotation summary's notes.
  returned: always
  type: list
  elements: str
  sample: ["talos consumers: 2 pods reading a talos.dev ServiceAccount Secret"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.talosops.pki.plugins.module_utils._ansible import run_module
from ansible_collections.talosops.pki.plugins.module_utils._backends import kubernetes_consumers


def main():
    run_module(kubernetes_consumers, AnsibleModule)


if __name__ == "__main__":
    main()
