# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.

from __future__ import annotations


class ModuleDocFragment:
    """How a task reaches the Kubernetes API: a client-certificate kubeconfig, TLS verified."""

    DOCUMENTATION = r"""
options:
  kubeconfig:
    description:
      - Path of the kubeconfig with client-certificate credentials (the admin kubeconfig Talos issues).
      - Found as C(kubectl) does when not set - the first file of E(KUBECONFIG), else C(~/.kube/config).
    type: path
  context:
    description:
      - Context of the kubeconfig to use. Its C(current-context) when not set.
    type: str
  server_ca:
    description:
      - CA certificate files to verify the API servers' certificates with, instead of the kubeconfig's
        C(certificate-authority-data).
      - Used to check one trust state precisely during a rotation, for example an old kubeconfig against API servers that
        already serve with the new CA. TLS verification is never switched off.
    type: list
    elements: path
  request_timeout:
    description:
      - Seconds one request to the Kubernetes API may take (connect and read).
    type: float
    default: 10.0
notes:
  - Runs on the controller and talks to the Kubernetes API over TLS (C(urllib3), plain REST calls read as JSON; not the
    C(kubernetes) Python client, whose import costs about a second and whose models refuse objects that leave out a field).
    The client certificate and key are loaded into the TLS context from memory (Linux C(memfd)); only where that is missing
    do they pass through a private temporary folder (0700, files 0600) removed right after loading.
requirements:
  - urllib3 >= 1.26
  - cryptography >= 41.0
  - ruamel.yaml >= 0.17.21
"""
