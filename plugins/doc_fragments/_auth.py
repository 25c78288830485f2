# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.

from __future__ import annotations


class ModuleDocFragment:
    """Options of plugins/module_utils/_auth.py AUTH_ARGUMENT_SPEC: how a task reaches the Talos API."""

    DOCUMENTATION = r"""
options:
  talosconfig:
    description:
      - Path of the talosconfig whose context gives the endpoints and the client credentials.
      - Found as C(talosctl) does when not set - the E(TALOSCONFIG) environment variable, else C(~/.talos/config).
    type: path
  context:
    description:
      - Context of the talosconfig to use. The talosconfig's current context when not set.
    type: str
  endpoints:
    description:
      - Control-plane endpoints to connect to, overriding the context's endpoints - each an IP address or host name,
        optionally with a port (C(10.5.0.2), C(10.5.0.2:50000), C([fd00::2]:50000)); the port defaults to 50000.
      - Calls for a node go through an endpoint with the C(node) header, as C(talosctl -n) does.
    type: list
    elements: str
  server_ca:
    description:
      - CA certificate files to verify the endpoints' server certificates with, instead of the context's C(ca).
      - Used to check one trust state precisely, for example only the old CA or only the new CA during a rotation.
      - TLS verification is never switched off.
    type: list
    elements: path
  call_timeout:
    description:
      - Seconds one Talos API call may take.
    type: float
    default: 30.0
  retry_deadline:
    description:
      - Seconds during which a call refused as transient (Unavailable, or FailedPrecondition while another apply runs) is retried.
    type: float
    default: 10.0
notes:
  - Runs on the controller; talks to the Talos API (TCP 50000) over mutual TLS. Task arguments name files, never key material.
requirements:
  - cryptography >= 41.0
  - grpclib >= 0.4.7
  - protobuf >= 4.21
  - ruamel.yaml >= 0.17.21
"""

    # Only the modules of the action group (meta/runtime.yml) use this one; the inventory plugin is no action.
    ACTION_GROUP = r"""
attributes:
  action_group:
    description: Use C(group/talosops.pki.talos) in C(module_defaults) to set the options above once for every module that
      talks to the Talos API.
    support: full
    membership:
      - talosops.pki.talos
"""
