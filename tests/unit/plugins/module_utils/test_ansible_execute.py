"""_ansible.execute: every failure a backend can meet becomes a task failure that says what happened and what to do,
with secrets masked - never a bare exception."""

import errno
import types

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _ansible
from ansible_collections.talosops.pki.plugins.module_utils._errors import TalosAPIError

TOKEN = "abcdef.0123456789abcdef"


def backend_raising(error):
    def run(params, check_mode=False, diff=False, sealing=None):
        raise error
    return types.SimpleNamespace(__name__="ansible_collections.talosops.pki.plugins.module_utils._backends.machine_patch", run=run)


def execute(error, **params):
    return _ansible.execute(backend_raising(error), dict(params), check_mode=False, diff=False)


def test_a_collection_error_that_quotes_a_config_is_redacted():
    result = execute(TalosAPIError("10.5.0.2 refused the config:\n    token: %s\n" % TOKEN))
    assert result["failed"] and TOKEN not in result["msg"] and "token: <redacted>" in result["msg"]


@pytest.mark.parametrize("error", [ValueError("bad value %s" % TOKEN), RecursionError("maximum recursion depth exceeded"),
                                   OverflowError("date value out of range"), KeyError("token"), AttributeError("x")])
def test_an_unexpected_exception_names_the_task_node_kind_and_a_safe_way_on(error):
    result = execute(error, node="10.5.0.2")
    message = result["msg"]
    assert result["failed"]
    assert message.startswith("talos_machine_patch (node 10.5.0.2) failed unexpectedly (%s: " % type(error).__name__)
    assert "--check" in message and "-vvv" in message
    assert "Traceback" not in message and TOKEN.split(".")[1] not in message
    assert "Traceback" in result["exception"] and TOKEN.split(".")[1] not in result["exception"]


def test_a_full_disk_names_the_path_and_says_what_to_do():
    error = OSError(errno.ENOSPC, "No space left on device", "/rotation/talos/audit.jsonl")
    result = execute(error)
    assert result["failed"] and "exception" not in result
    assert "/rotation/talos/audit.jsonl: No space left on device" in result["msg"]
    assert "free space" in result["msg"] and "talos_machine_patch" in result["msg"]


def test_keyboard_interrupt_is_not_swallowed():
    with pytest.raises(KeyboardInterrupt):
        execute(KeyboardInterrupt())
