# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""talos_verify: prove that credentials reach nodes (or are refused by them), concurrently."""

from __future__ import annotations

import asyncio
import time

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._auth import Target, with_auth
from ansible_collections.talosops.pki.plugins.module_utils._client import run as run_async
from ansible_collections.talosops.pki.plugins.module_utils._errors import ClientNotTrustedError, PermissionDeniedError, TalosAPIError
from ansible_collections.talosops.pki.plugins.module_utils._redact import redact

ARGUMENT_SPEC = with_auth({
    "nodes": {"type": "list", "elements": "str", "required": True},
    "expect": {"type": "str", "default": "reachable", "choices": ["reachable", "refused"]},
    "direct": {"type": "bool", "default": False},
    "deadline": {"type": "float", "default": 60.0},
    "retry_interval": {"type": "float", "default": 0.5},
    "concurrency": {"type": "int", "default": 64},
    "prove_roles": {"type": "bool", "default": False},
})

# Talos' authorization rules (machined's rules table) for the two calls that tell the roles apart.
VERSION_ROLES = frozenset(("os:admin", "os:operator", "os:reader"))
APPLY_ROLES = frozenset(("os:admin",))


def run(params, check_mode=False, diff=False, sealing=None):
    if params["concurrency"] < 1 or params["deadline"] <= 0 or params["retry_interval"] <= 0:
        return {"failed": True, "msg": "concurrency must be >= 1 and deadline, retry_interval > 0."}
    if params["prove_roles"] and params["expect"] != "reachable":
        return {"failed": True, "msg": "prove_roles needs expect=reachable: roles are proven on nodes that accept the credentials."}
    target = Target(params, sealing=sealing)
    results = run_async(_verify_all(params, target))
    failed = sorted(node for node, outcome in results.items() if not outcome["ok"])
    summary = {
        "changed": False,
        "expect": params["expect"],
        "nodes": results,
        "ok_count": len(results) - len(failed),
        "failed_nodes": failed,
    }
    if failed:
        details = "; ".join("%s: %s" % (node, results[node]["error"]) for node in failed[:10])
        summary.update(failed=True, msg="%d of %d nodes did not prove %s within %ss (%s%s)" % (
            len(failed), len(results), _wording(params["expect"]), params["deadline"], details, "; ..." if len(failed) > 10 else ""))
    return summary


def _wording(expect):
    return "reachable with these credentials" if expect == "reachable" else "that they refuse these credentials"


async def _verify_all(params, target):
    limit = asyncio.Semaphore(params["concurrency"])
    shared = None if params["direct"] else target.client()
    try:
        outcomes = await asyncio.gather(*(_verify_node(node, params, target, shared, limit) for node in params["nodes"]))
    finally:
        if shared is not None:
            await shared.close()
    return dict(zip(params["nodes"], outcomes))


async def _verify_node(node, params, target, shared, limit):
    """Retry until the node proves the expectation or the deadline passes; a refusal must be a refusal of our client."""
    started = time.monotonic()
    last_error = "not tried"
    async with limit:
        while True:
            client = shared or target.client(endpoints=[node])
            try:
                if params["prove_roles"]:
                    proof = await _prove_roles(client, None if params["direct"] else node, target.credentials.crt)
                    if proof["ok"]:
                        return dict(proof, seconds=round(time.monotonic() - started, 3))
                    last_error = proof["error"]
                    raise _NotYet()
                version = await client.version(node=None if params["direct"] else node)
                if params["expect"] == "reachable":
                    return {"ok": True, "version": version.get("tag"), "hostname": version.get("hostname"),
                            "seconds": round(time.monotonic() - started, 3)}
                last_error = "still accepts these credentials"
            except ClientNotTrustedError as error:
                if params["expect"] == "refused":
                    return {"ok": True, "refused": type(error).__name__, "seconds": round(time.monotonic() - started, 3)}
                last_error = redact(str(error))
            except TalosAPIError as error:  # its text may quote what the node said: masked like every error
                last_error = redact("%s: %s" % (type(error).__name__, error))
            except _NotYet:
                pass
            finally:
                if shared is None:
                    await client.close()
            if time.monotonic() - started + params["retry_interval"] > params["deadline"]:
                return {"ok": False, "error": last_error, "seconds": round(time.monotonic() - started, 3)}
            await asyncio.sleep(params["retry_interval"])


class _NotYet(Exception):
    """The node answered, but not yet as expected: try again until the deadline."""


async def _prove_roles(client, node, crt):
    """The client certificate's roles, and nothing more, on one node: a call each role set allows or refuses.

    Version is allowed to os:admin, os:operator and os:reader; ApplyConfiguration only to os:admin. An
    admin proves it with a dry run of the node's own configuration (nothing changes); anyone else must
    be refused a dry-run apply with PermissionDenied - any other answer (even an error about the empty
    configuration sent) means the node did not refuse it for the role.
    """
    roles = sorted(role for role in _pki.describe_certificate(crt)["organization"] if role.strip())
    seen = {}
    try:
        await client.version(node=node)
        seen["version"] = "allowed"
    except PermissionDeniedError:
        seen["version"] = "denied"
    if APPLY_ROLES & set(roles):
        config = await client.machine_config(node=node)
        await client.apply_configuration(config, node=node, dry_run=True)
        seen["apply"] = "allowed"
    else:
        try:
            await client.apply_configuration(b"", node=node, dry_run=True)
            seen["apply"] = "allowed"
        except PermissionDeniedError:
            seen["apply"] = "denied"
        except TalosAPIError as error:
            seen["apply"] = "not denied (%s)" % type(error).__name__
    expected = {"version": "allowed" if VERSION_ROLES & set(roles) else "denied",
                "apply": "allowed" if APPLY_ROLES & set(roles) else "denied"}
    wrong = ["%s %s, expected %s" % (call, seen[call], expected[call]) for call in ("version", "apply") if seen[call] != expected[call]]
    if wrong:
        return {"ok": False, "roles": roles, "error": "roles %s: %s" % (", ".join(roles) or "(none)", "; ".join(wrong))}
    return dict({"ok": True, "roles": roles}, **seen)
