# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.

from __future__ import annotations

# The suboptions of one workload to restart after a rotation's swap: the documentation of
# _backends/kubernetes_restart.WORKLOAD_OPTIONS, written once for every option that takes such a list.
_WORKLOAD_SUBOPTIONS = r"""
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


class ModuleDocFragment:
    """The workloads to restart after a CA rotation's swap (the role's rotate_ca_kubernetes_restart_workloads); the module
    documents the option itself (description, type, default) and takes its suboptions from here."""

    # talos_kubernetes_restart's option `workloads`.
    DOCUMENTATION = "\noptions:\n  workloads:" + _WORKLOAD_SUBOPTIONS

    # talos_kubernetes_consumers's option `restart_workloads`.
    RESTART_WORKLOADS = "\noptions:\n  restart_workloads:" + _WORKLOAD_SUBOPTIONS
