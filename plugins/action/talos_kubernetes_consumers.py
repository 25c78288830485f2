# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs talos_kubernetes_consumers on the controller: see plugins/modules/talos_kubernetes_consumers.py for its documentation."""

from __future__ import annotations

from ansible_collections.talosops.pki.plugins.module_utils._backends import kubernetes_consumers
from ansible_collections.talosops.pki.plugins.plugin_utils._action import TalosActionBase


class ActionModule(TalosActionBase):
    BACKEND = kubernetes_consumers
