# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""The one place where a backend meets Ansible, for modules and action plugins alike.

A backend is a module_utils/_backends/<name>.py file with ARGUMENT_SPEC and
run(params, check_mode, diff) -> dict. Its module runs it in a module process; its action
plugin runs the same function on the controller, which saves a process and the imports
per host (what makes a 100-node rotation fast).
"""

from __future__ import annotations

import importlib
import traceback

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.talosops.pki.plugins.module_utils import _files
from ansible_collections.talosops.pki.plugins.module_utils._errors import TalosPKIError

# (name to tell the user, module to import)
REQUIRED_LIBRARIES = (
    ("cryptography", "cryptography.x509"),
    ("grpclib", "grpclib.client"),
    ("protobuf", "google.protobuf.message_factory"),
    ("ruamel.yaml", "ruamel.yaml"),
)


def missing_library(extra=()):
    """(message, traceback) for the first runtime dependency (shared, then `extra`) that does not import, else None."""
    for name, module in REQUIRED_LIBRARIES + tuple(extra):
        try:
            importlib.import_module(module)
        except ImportError:
            return missing_required_lib(name), traceback.format_exc()
    return None


def execute(backend, params, check_mode, diff, sealing=None):
    """Run a backend and shape its outcome as a task result (failures included, never raised).

    `sealing` (a _files.Sealing) encrypts at rest what the backend writes under its folder; only
    the controller has the vault secrets, so only action plugins give one.
    """
    # A backend may need more than every backend does (the Kubernetes checks need the kubernetes client).
    missing = missing_library(getattr(backend, "REQUIRED_LIBRARIES", ()))
    if missing:
        return {"failed": True, "msg": missing[0], "exception": missing[1]}
    try:
        with _files.sealing(sealing or _files.Sealing()):
            result = backend.run(params, check_mode=check_mode, diff=diff)
    except TalosPKIError as error:
        return {"failed": True, "msg": str(error)}
    result.setdefault("changed", False)
    return result


def run_module(backend, module_class):
    """main() of every module: arguments, run, exit."""
    module = module_class(argument_spec=backend.ARGUMENT_SPEC, supports_check_mode=True,
                          **getattr(backend, "ARGUMENT_RULES", {}))
    if module.params.get("encrypt") == "always":
        module.fail_json(msg="encrypt=always needs the controller's vault secrets, which a module process does not have: run the "
                             "task through the collection's action plugin (the default, with the module's own name).")
    result = execute(backend, module.params, module.check_mode, module._diff)  # pylint: disable=protected-access
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)
