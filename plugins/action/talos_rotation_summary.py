# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs talos_rotation_summary on the controller: see plugins/modules/talos_rotation_summary.py for its documentation.

On the controller it reads the rotation's audit log with the play's vault secrets (a sealed log is decrypted), and with
`show` prints the summary's lines as plain text.
"""

from __future__ import annotations

from ansible.utils.display import Display

from ansible_collections.talosops.pki.plugins.module_utils._backends import rotation_summary
from ansible_collections.talosops.pki.plugins.plugin_utils._action import TalosActionBase


class ActionModule(TalosActionBase):
    BACKEND = rotation_summary

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if self._task.args.get("show") and not result.get("failed"):
            # Plain lines, as a table reads; a debug task would print them as JSON strings.
            display = Display()
            for line in result["lines"]:
                display.display(line)
        return result
