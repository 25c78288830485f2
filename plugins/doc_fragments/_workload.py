# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.

from __future__ import annotations


class ModuleDocFragment:
    """The workloads to restart after a CA rotation's swap (the role's rotate_ca_kubernetes_restart_workloads); the module
    documents the option itself (description, type, default) and takes its suboptions from here.

    Two literal copies of the same suboptions (ansible-test's yamllint reads each fragment as one string literal), the
    documentation of _backends/kubernetes_restart.WORKLOAD_OPTIONS: tests/unit/plugins/doc_fragments/test_workload.py
    keeps them equal to each other and to that argument spec."""

    # talos_kubernetes_restart's option `workloads`.
    DOCUMENTATION = r"""
options:
  workloads:
    suboptions:
      namespace:
        description: Namespace of the workload.
        type: str
        required: true
      kind:
        description: Kind of the workload.
        type: str
        required: true
        choices: [daemonset, deployment, statefulset]
      name:
        description: Name of the workload.
        type: str
        required: true
      after:
        description:
          - The kinds of rotation after whose swap the workload is restarted - for example V(talos) for pods that read a
            Talos API talosconfig from a C(talos.dev) ServiceAccount Secret, V(aggregator) for aggregated API servers.
            V([kubernetes]) when not set.
        type: list
        elements: str
        choices: [talos, kubernetes, aggregator]
"""

    # talos_kubernetes_consumers's option `restart_workloads`.
    RESTART_WORKLOADS = r"""
options:
  restart_workloads:
    suboptions:
      namespace:
        description: Namespace of the workload.
        type: str
        required: true
      kind:
        description: Kind of the workload.
        type: str
        required: true
        choices: [daemonset, deployment, statefulset]
      name:
        description: Name of the workload.
        type: str
        required: true
      after:
        description:
          - The kinds of rotation after whose swap the workload is restarted - for example V(talos) for pods that read a
            Talos API talosconfig from a C(talos.dev) ServiceAccount Secret, V(aggregator) for aggregated API servers.
            V([kubernetes]) when not set.
        type: list
        elements: str
        choices: [talos, kubernetes, aggregator]
"""
