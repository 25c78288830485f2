# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""The one place where a backend meets Ansible, for modules and action plugins alike.

A backend is a module_utils/_backends/<name>.py file with ARGUMENT_SPEC and
run(params, check_mode, diff, sealing) -> dict. Its module runs it in a module process; its action
plugin runs the same function on the controller, which saves a process and the imports
per host (what makes a 100-node rotation fast). `sealing` (a _files.Sealing, or None) is how
the files the backend reads and writes are encrypted at rest: only the controller has vault
secrets, so a module process passes None.
"""

from __future__ import annotations

import importlib
import traceback

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.talosops.pki.plugins.module_utils import _files
from ansible_collections.talosops.pki.plugins.module_utils._errors import TalosPKIError
from ansible_collections.talosops.pki.plugins.module_utils._redact import redact

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

    `sealing` (a _files.Sealing) is handed to the backend, which encrypts at rest what it writes under
    its folder and reads vault-encrypted files with it; only the controller has the vault secrets, so
    only action plugins give one.
    """
    # A backend may need more than every backend does (the Kubernetes API requests need urllib3).
    missing = missing_library(getattr(backend, "REQUIRED_LIBRARIES", ()))
    if missing:
        return {"failed": True, "msg": missing[0], "exception": missing[1]}
    try:
        result = backend.run(params, check_mode=check_mode, diff=diff, sealing=sealing)
    except TalosPKIError as error:
        return {"failed": True, "msg": redact(str(error))}
    except OSError as error:  # a file or socket the backend did not wrap: still say which, and what to do
        return {"failed": True, "msg": redact(os_error_message(error, _task(backend, params)))}
    except Exception as error:  # pylint: disable=broad-except  # a bug or an input nothing checks yet: never a bare "Task failed"
        return {"failed": True, "msg": redact(unexpected_error_message(error, _task(backend, params))),
                "exception": redact(traceback.format_exc())}
    result.setdefault("changed", False)
    return result


def _task(backend, params):
    """'talos_machine_patch (node 10.5.0.2)': the module, and the node when the task has one."""
    name = "talos_" + backend.__name__.rsplit(".", 1)[-1]
    node = params.get("node")
    return "%s (node %s)" % (name, node) if node else name


def os_error_message(error, task):
    """What an OSError no backend wrapped means for the user: the path, the reason, what to do."""
    where = " %s" % error.filename if error.filename else " a file or connection"
    return ("%s could not use%s: %s. Files the collection writes are replaced whole or not at all, and audit log lines are "
            "appended whole or not at all; %s: the rotation resumes from the state of the nodes and the rotation directory."
            % (task, where, error.strerror or type(error).__name__, _files.remedy(error)))


def unexpected_error_message(error, task):
    """An exception the collection did not expect: its kind and (redacted) text, and a safe way on."""
    text = str(error) or "no detail"
    if len(text) > 300:
        text = text[:300] + "..."
    return ("%s failed unexpectedly (%s: %s). The collection cannot tell whether this task changed anything: run the "
            "playbook with --check to see the state of every node before running it again, and report this with the "
            "output of -vvv (its traceback has secrets masked)." % (task, type(error).__name__, text))


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
