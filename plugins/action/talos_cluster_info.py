# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs talos_cluster_info on the controller: see plugins/modules/talos_cluster_info.py for its documentation."""

from __future__ import annotations

from ansible.utils.display import Display

from ansible_collections.talosops.pki.plugins.module_utils._backends import cluster_info
from ansible_collections.talosops.pki.plugins.plugin_utils._action import TalosActionBase


class ActionModule(TalosActionBase):
    BACKEND = cluster_info

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        # A refusal leads with what to do; every node's CA state (details) would bury it, so it is shown from -v on, with the
        # problems one by one (the message already joins them).
        if result.get("failed") and "details" in result and Display().verbosity < 1:
            del result["details"], result["problems"]
            result["msg"] += " (Rerun with -v for every node's CA state.)"
        return result
