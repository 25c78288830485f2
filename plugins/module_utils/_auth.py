# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""How a task reaches the Talos API: the shared auth options and the client they build.

Options name files, never key material, so no secret ever passes through task arguments.
"""

from __future__ import annotations

from ansible_collections.talosops.pki.plugins.module_utils import _files
from ansible_collections.talosops.pki.plugins.module_utils._client import Credentials, TalosClient
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import TalosConfig, find_talosconfig

AUTH_ARGUMENT_SPEC = {
    "talosconfig": {"type": "path"},
    "context": {"type": "str"},
    "endpoints": {"type": "list", "elements": "str"},
    "server_ca": {"type": "list", "elements": "path"},
    "call_timeout": {"type": "float", "default": 30.0},
    "retry_deadline": {"type": "float", "default": 10.0},
}


def with_auth(spec):
    """A module's argument spec merged with the shared auth options."""
    merged = dict(AUTH_ARGUMENT_SPEC)
    merged.update(spec)
    return merged


class Target:
    """Resolved auth options: which talosconfig context, endpoints and credentials a task uses."""

    def __init__(self, params, talosconfig=None, sealing=None):
        """`sealing` (a _files.Sealing, or None) reads the talosconfig and server CA files when vault-encrypted."""
        self.talosconfig_path = find_talosconfig(talosconfig or params.get("talosconfig"))
        self.context = TalosConfig.load(self.talosconfig_path, sealing=sealing).get_context(params.get("context"))
        self.endpoints = tuple(params.get("endpoints") or self.context.endpoints)
        if not self.endpoints:
            raise ConfigError("context %s of %s has no endpoints: set `endpoints` in the task or add them to the talosconfig "
                              "(talosctl config endpoint <control plane IPs>)." % (self.context.name, self.talosconfig_path))
        server_ca = params.get("server_ca")
        ca_bundle = _files.server_ca_bundle(server_ca, sealing) if server_ca else self.context.ca
        self.credentials = Credentials(ca=ca_bundle, crt=self.context.crt, key=self.context.key)
        self.call_timeout = params.get("call_timeout", 30.0)
        self.retry_deadline = params.get("retry_deadline", 10.0)

    def client(self, endpoints=None):
        """A client to the endpoints (or to `endpoints`, e.g. one node for a direct check)."""
        return TalosClient(list(endpoints or self.endpoints), self.credentials,
                           call_timeout=self.call_timeout, retry_deadline=self.retry_deadline)
