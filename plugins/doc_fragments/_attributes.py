# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.

from __future__ import annotations


class ModuleDocFragment:
    """Attributes shared by the modules; each module adds its own check_mode and diff_mode support."""

    DOCUMENTATION = r"""
attributes:
  action:
    description: Runs as an action plugin on the controller, the module holding the documentation and a fallback C(main()).
    support: full
  async:
    description: Not supported as an async task.
    support: none
  platform:
    description: Runs on the controller and talks to Talos nodes over their API.
    support: full
    platforms: posix
"""

    INFO_MODULE = r"""
attributes:
  check_mode:
    description: Reads only; runs the same in check mode.
    support: full
  diff_mode:
    description: Changes nothing, so there is no diff.
    support: N/A
"""
