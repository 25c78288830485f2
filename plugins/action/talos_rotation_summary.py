# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs talos_rotation_summary on the controller: see plugins/modules/talos_rotation_summary.py for its documentation.

Besides the module's options it reads the registered talos_machine_patch results named in `result_vars` from every
node's host (`node_names` maps node addresses to inventory hosts), so that a role need not gather them in Jinja.
"""

from __future__ import annotations

from ansible.utils.display import Display

from ansible_collections.talosops.pki.plugins.module_utils._backends import rotation_summary
from ansible_collections.talosops.pki.plugins.plugin_utils._action import TalosActionBase


class ActionModule(TalosActionBase):
    BACKEND = rotation_summary

    def run(self, tmp=None, task_vars=None):
        args = dict(self._task.args)
        names = args.get("result_vars") or []
        if names:
            hostvars = (task_vars or {}).get("hostvars", {})
            patches = list(args.get("patches") or [])
            for host in (args.get("node_names") or {}).values():
                variables = hostvars[host] if host in hostvars else {}
                for name in names:
                    registered = variables.get(name) if name in variables else None
                    # A skipped task (the host is in the other tier, or the phase did not run) registers no node.
                    if isinstance(registered, dict) and registered.get("node") and registered.get("phase"):
                        patches.append({key: registered[key] for key in ("node", "phase", "progress_before", "progress_after",
                                                                         "changed", "started", "finished") if key in registered})
            args["patches"] = patches
        self._task.args = args
        result = super().run(tmp, task_vars)
        if args.get("show") and not result.get("failed"):
            # Plain lines, as a table reads; a debug task would print them as JSON strings.
            display = Display()
            for line in result["lines"]:
                display.display(line)
        return result
