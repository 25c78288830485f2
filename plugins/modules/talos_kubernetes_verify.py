#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: talos_kubernetes_verify
short_description: Prove that a kubeconfig reaches the Kubernetes API with every node Ready, or that it is refused
version_added: 0.1.0
description:
  - Lists the cluster's nodes (C(GET /api/v1/nodes)) on each API server of O(api_servers) (default - the
    kubeconfig's server), concurrently, each try on a fresh connection.
  - With O(expect=reachable), every API server must answer and every node it lists must be Ready (and every node of
    O(nodes) registered); retried until O(deadline), as a kubelet takes a moment to report after a restart. The Ready
    status of each node is reported.
  - With O(expect=refused), every API server must answer 401 Unauthorized - kube-apiserver no longer authenticates the client
    certificate. A TLS failure, a timeout or another status proves nothing about the credentials and fails the check.
  - With O(expect=authenticated), every API server must authenticate the client certificate - list the nodes, or refuse it
    403 Forbidden (a user whose groups may not list nodes) but not 401; for the kubeconfigs of users other than the admin.
  - TLS verification always stays on; O(server_ca) replaces the kubeconfig's CA data to check one trust state precisely.
  - Never changes anything.
extends_documentation_fragment:
  - talosops.pki._kubernetes
  - talosops.pki._attributes
  - talosops.pki._attributes.info_module
options:
  api_servers:
    description:
      - API servers to check, as C(https://host:port) or C(host) (port 6443). The kubeconfig's server when not set.
      - Give every control plane to prove that each kube-apiserver refuses old credentials, not only the one behind the
        kubeconfig's endpoint.
    type: list
    elements: str
  expect:
    description:
      - V(reachable) - the API answers and every node is Ready. V(refused) - every API server answers 401 Unauthorized.
        V(authenticated) - every API server authenticates the client certificate (an answer or 403, never 401).
    type: str
    default: reachable
    choices: [reachable, refused, authenticated]
  nodes:
    description:
      - Nodes that must be registered (and Ready), by node name or address - for example the inventory's nodes, so that a
        node missing from the API is not mistaken for a healthy cluster.
    type: list
    elements: str
  refuse_unlisted_nodes:
    description:
      - Fail at once, without retrying, when the API lists a Node that none of O(nodes) names (by node name or address) -
        a node the rotation does not cover would be locked out when the old CA is removed. The Kubernetes view of the
        preflight's topology guard, next to the Talos cluster members; requires O(nodes).
    type: bool
    default: false
  deadline:
    description:
      - Seconds each API server has to prove the expectation, retries included (upstream C(talosctl) waits 3 minutes for
        nodes to be Ready).
    type: float
    default: 180.0
  retry_interval:
    description:
      - Seconds between two tries.
    type: float
    default: 1.0
  front_proxy:
    description:
      - Also prove the front-proxy trust of an aggregator CA rotation on every API server (O(api_servers)), as an aggregated
        API server would see it - a short-lived client certificate (CN C(front-proxy-client)) from a CA sends a
        SelfSubjectReview with C(X-Remote-User); kube-apiserver takes that header as the identity only when the
        certificate comes from its C(--requestheader-client-ca-file).
      - Checked after the main expectation holds on every API server, within the same O(deadline).
    type: dict
    suboptions:
      rotation_dir:
        description:
          - The aggregator CA rotation directory (M(talosops.pki.talos_ca_generate) with
            O(talosops.pki.talos_ca_generate#module:kind=aggregator)); its new CA is probed.
        type: path
        required: true
      new_ca:
        description: What a certificate from the rotation's new CA must get.
        type: str
        default: accepted
        choices: [accepted, refused]
      previous_ca:
        description:
          - What a certificate from the CA being replaced must get - V(refused) is a 401 or the TLS handshake refusing it.
        type: str
        default: accepted
        choices: [accepted, refused]
      secrets_file:
        description:
          - The secrets bundle whose C(certs.k8saggregator) still holds the CA being replaced, with its key. Without it
            (or once it holds the new CA) the previous CA is not probed; the C(probes) of RV(front_proxy) list what was.
        type: path
seealso:
  - module: talosops.pki.talos_kubeconfig
  - module: talosops.pki.talos_verify
author:
  - talosops.pki contributors (@talosops)
"""

EXAMPLES = r"""
- name: The new kubeconfig works and every node is Ready
  talosops.pki.talos_kubernetes_verify:
    kubeconfig: ~/.talos/rotation/kubernetes/kubeconfig
    nodes: "{{ groups['controlplane'] + groups['worker'] }}"
  run_once: true

- name: Every API server refuses the kubeconfig from before the rotation
  talosops.pki.talos_kubernetes_verify:
    kubeconfig: ~/.talos/rotation/kubernetes/previous-kubeconfig
    server_ca: [~/.talos/rotation/kubernetes/ca.crt]
    api_servers: [10.5.0.2, 10.5.0.3, 10.5.0.4]
    expect: refused
  run_once: true

- name: The aggregator CA rotation - both front-proxy CAs trusted by every API server
  talosops.pki.talos_kubernetes_verify:
    # The admin kubeconfig the aggregator flow fetched into its rotation folder.
    kubeconfig: ~/.talos/rotation/aggregator/kubeconfig
    api_servers: [10.5.0.2, 10.5.0.3, 10.5.0.4]
    front_proxy:
      rotation_dir: ~/.talos/rotation/aggregator
      secrets_file: ~/clusters/prod/secrets.yaml
  run_once: true
"""

RETURN = r"""
front_proxy:
  description:
    - With O(front_proxy) - C(probes) (per CA label V(new), V(previous) - C(fingerprint), C(expect)) and C(api_servers) (per
      API server and label - C(ok), C(detail), C(seconds)). No key material.
  returned: when O(front_proxy) was given and every API server proved the main expectation
  type: dict
expect:
  description: The expectation checked.
  returned: always
  type: str
  sample: reachable
kubeconfig:
  description: The kubeconfig used.
  returned: always
  type: str
context:
  description: The context used.
  returned: always
  type: str
api_servers:
  description: Per API server URL - C(ok), C(detail) (what it answered) and C(seconds) it took.
  returned: always
  type: dict
  sample: {"https://10.5.0.2:6443": {"ok": true, "detail": "answered, every node Ready", "seconds": 0.2}}
failed_api_servers:
  description: API servers that did not prove the expectation, sorted.
  returned: always
  type: list
  elements: str
nodes:
  description: Per node name, from the last listing - C(ready), C(status) of the Ready condition (V(True), V(False), V(Unknown)),
    C(reason), C(message), C(addresses). Empty with O(expect=refused).
  returned: always
  type: dict
  sample: {"cp-1": {"ready": true, "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
           "addresses": ["10.5.0.2", "cp-1"]}}
ready_count:
  description: Nodes Ready in the last listing.
  returned: with O(expect=reachable)
  type: int
not_ready_nodes:
  description: Nodes not Ready in the last listing, sorted.
  returned: with O(expect=reachable)
  type: list
  elements: str
missing_nodes:
  description: Entries of O(nodes) that the API does not list.
  returned: with O(expect=reachable)
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.talosops.pki.plugins.module_utils._ansible import run_module
from ansible_collections.talosops.pki.plugins.module_utils._backends import kubernetes_verify


def main():
    run_module(kubernetes_verify, AnsibleModule)


if __name__ == "__main__":
    main()
