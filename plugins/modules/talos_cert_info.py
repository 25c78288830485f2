#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: talos_cert_info
short_description: Report every CA, signing key and client certificate of a Talos cluster with its days left
version_added: 0.1.0
description:
  - Reads, concurrently through the endpoints, each node's active machine configuration and reports every CA it holds - the
    Talos API CA, the Kubernetes API CA, the Kubernetes aggregator (front-proxy) CA and the etcd CA - with fingerprint,
    subject, not-after date and whole days left, and the nodes that hold each. Every configuration shape is read - the
    v1alpha1 fields (C(machine.ca), C(cluster.ca), C(cluster.aggregatorCA), C(cluster.etcd.ca), C(cluster.serviceAccount))
    and the Talos v1.14+ documents C(KubeAPIServerCAConfig), C(KubeAggregatorCAConfig) and C(KubeServiceAccountConfig).
  - Reports the service-account signing key and accepted keys by public-key fingerprint; a key carries no date, so it has
    no days left.
  - Reports whether nodes disagree (several issuing CAs of one kind, see RV(disagreements)) and stray accepted CAs (accepted
    by some node, issuing on none, see RV(stray_cas)).
  - Also reports the client certificates of the talosconfigs (every context) and kubeconfigs (every context) given - and
    whether a CA on the nodes issued them - and the CA certificates of C(talosctl gen secrets) bundles - and whether the
    nodes still issue with them.
  - Read-only, and never fails on what it finds - an unreachable node, a refused credential or an unreadable file is an
    entry with status V(error) - so that one broken cluster does not hide the others in a fleet report. Only invalid
    arguments fail the task.
  - Returns fingerprints, subjects and dates only, never key material.
  - The playbook C(talosops.pki.cert_report) runs it for every cluster of an inventory and writes the report.
extends_documentation_fragment:
  - talosops.pki._auth
  - talosops.pki._attributes
  - talosops.pki._attributes.info_module
options:
  cluster:
    description:
      - Name of the cluster in the report (for example its inventory group).
    type: str
  nodes:
    description:
      - Addresses of the cluster's nodes, control planes and workers.
    type: list
    elements: str
    required: true
  node_names:
    description:
      - Inventory names by node address, so that the report names each node as the inventory does.
    type: dict
    default: {}
  talosconfigs:
    description:
      - Talosconfigs whose client certificates (every context) are reported.
    type: list
    elements: path
    default: []
  kubeconfigs:
    description:
      - Kubeconfigs whose client certificates (every context) are reported.
    type: list
    elements: path
    default: []
  secrets_files:
    description:
      - C(talosctl gen secrets) bundles whose CA certificates (C(certs.os), C(certs.k8s), C(certs.k8saggregator),
        C(certs.etcd)) are reported.
    type: list
    elements: path
    default: []
  warn_days:
    description:
      - An entry with fewer whole days left than this has status V(warn) (V(expired) below zero).
    type: int
    default: 90
  concurrency:
    description:
      - How many nodes are read at once.
    type: int
    default: 64
author:
  - talosops.pki contributors (@talosops)
"""

EXAMPLES = r"""
- name: Read the certificates of one cluster
  talosops.pki.talos_cert_info:
    talosconfig: ~/.talos/config
    cluster: prod
    nodes: [10.5.0.2, 10.5.0.3, 10.5.0.4, 10.5.0.5]
    talosconfigs: [~/.talos/config]
    kubeconfigs: [~/.kube/config]
    warn_days: 60
  register: certificates
  run_once: true

- name: Show what expires soonest
  ansible.builtin.debug:
    msg: "{{ certificates.min_days_left }} days left; {{ certificates.alerts }} entries need attention"
  run_once: true
"""

RETURN = r"""
cluster:
  description: O(cluster).
  returned: always
  type: str
checked_at:
  description: When the days left were computed (UTC, ISO 8601).
  returned: always
  type: str
warn_days:
  description: O(warn_days).
  returned: always
  type: int
entries:
  description:
    - One per CA certificate, signing key, client certificate or unreadable source - C(cluster), C(kind) (V(talos),
      V(kubernetes), V(aggregator), V(etcd), V(service_account); for a file, the kind of CA its certificate belongs to;
      V(null) for an unreadable source), C(item) (readable name), C(role)
      (V(issuing), V(stray accepted), V(signing key), V(accepted key), V(client certificate), V(secrets bundle), V(error)),
      C(where) (the nodes or the file), C(subject), C(fingerprint) (SHA-256), C(not_after), C(days_left) (whole days,
      negative once expired, V(null) for keys), C(status) (V(ok), V(warn), V(expired), V(error), V(no expiry),
      V(untrusted) - a client certificate no CA on the nodes issued, so they refuse it - or V(stale) - a secrets bundle
      CA no node issues with, for example not written back after a rotation), and C(error) for V(error) entries; for
      client certificates C(roles) (subject O, the Talos roles) and C(trusted) - a trusted client certificate that
      outlives the CA that issued it counts down to that CA's expiry (C(not_after), C(days_left) and C(status) are the
      CA's; C(certificate_not_after) keeps its own date, C(note) says so); for secrets bundles C(in_cluster).
  returned: always
  type: list
  elements: dict
nodes:
  description: Per node address read - C(name) (inventory name), C(hostname), C(talos_version), C(machine_type).
  returned: always
  type: dict
disagreements:
  description: Per CA kind whose nodes issue with more than one CA, the nodes by issuing CA fingerprint.
  returned: always
  type: dict
stray_cas:
  description: Per CA kind, the accepted CAs no node issues with - C(fingerprint), C(subject), C(not_after), C(where).
  returned: always
  type: dict
min_days_left:
  description: The fewest days left of any entry with an expiry date, V(null) when none.
  returned: always
  type: int
alerts:
  description: How many entries have status V(warn), V(expired), V(error), V(untrusted) or V(stale).
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.talosops.pki.plugins.module_utils._ansible import run_module
from ansible_collections.talosops.pki.plugins.module_utils._backends import cert_info


def main():
    run_module(cert_info, AnsibleModule)


if __name__ == "__main__":
    main()
