# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""Base of the action plugins: run a module's backend on the controller.

Talos has no SSH, so every module runs on the controller anyway; doing it in the
controller's worker process skips a Python start and the imports per host. Arguments are
validated against the same ARGUMENT_SPEC the module declares.
"""

from __future__ import annotations

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from ansible.plugins.action import ActionBase

from ansible_collections.talosops.pki.plugins.module_utils import _files
from ansible_collections.talosops.pki.plugins.module_utils._ansible import execute


class TalosActionBase(ActionBase):
    """Subclasses set BACKEND to a module_utils/_backends module."""

    BACKEND = None
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        validator = ArgumentSpecValidator(self.BACKEND.ARGUMENT_SPEC, **getattr(self.BACKEND, "ARGUMENT_RULES", {}))
        validation = validator.validate(self._task.args)
        if validation.error_messages:
            result.update(failed=True, msg="; ".join(validation.error_messages))
            return result
        params = validation.validated_parameters
        sealing = self._sealing(params)
        if isinstance(sealing, str):
            result.update(failed=True, msg=sealing)
            return result
        outcome = execute(self.BACKEND, params, check_mode=bool(self._play_context.check_mode), diff=bool(self._task.diff),
                          sealing=sealing)
        # Same guarantee as a module: values of no_log options never come back in the result.
        result.update(remove_values(outcome, validation._no_log_values))  # pylint: disable=protected-access
        return result

    def _sealing(self, params):
        """Encryption at rest with the play's vault secrets (--vault-id, an AWX Vault credential), or why it is impossible.

        Vault-encrypted files are always read in clear when a secret is loaded; files written under
        encrypt_dir are encrypted unless encrypt=never, or when no secret is loaded and encrypt=auto.
        """
        vault = self._loader._vault  # pylint: disable=protected-access
        has_secret = bool(vault.secrets)
        mode, folder = params.get("encrypt", "never"), params.get("encrypt_dir")
        if mode == "always" and not has_secret:
            return ("encrypt=always but no vault secret is loaded, so %s would be written in clear: give a vault password "
                    "(--vault-id or --vault-password-file; in AWX a Vault credential), or set encrypt to auto." % (folder or "nothing"))
        seal = vault.encrypt if folder and has_secret and mode != "never" else None
        return _files.Sealing(folder if seal else None, seal, vault.decrypt if has_secret else None)
