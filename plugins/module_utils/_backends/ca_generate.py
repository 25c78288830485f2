# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""talos_ca_generate: the rotation's new CA, on disk before anything uses it; client credentials from it."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import stat
import tempfile
import time

from ansible_collections.talosops.pki.plugins.module_utils import _claim, _files, _pki, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._auth import Target
from ansible_collections.talosops.pki.plugins.module_utils._backends import rotation_lock
from ansible_collections.talosops.pki.plugins.module_utils._client import run as run_async
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, RotationStateError
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import SecretsBundle, TalosConfig, TalosContext

ARGUMENT_SPEC = _files.with_encryption({
    "path": {"type": "path", "required": True},
    "kind": {"type": "str", "default": "talos", "choices": ["talos", "kubernetes", "aggregator", "service_account"]},
    "algorithm": {"type": "str", "choices": list(_pki.ALGORITHMS)},
    "validity_hours": {"type": "int", "default": 87600},
    "previous_ca": {"type": "str"},
    "create": {"type": "bool", "default": True},
    "start_new": {"type": "bool", "default": False},
    "complete": {"type": "bool", "default": False},
    "talosconfig": {
        "type": "dict",
        "options": {
            "path": {"type": "path", "required": True},
            "context": {"type": "str", "required": True},
            "endpoints": {"type": "list", "elements": "str"},
            "nodes": {"type": "list", "elements": "str"},
            "roles": {"type": "list", "elements": "str", "default": ["os:admin"]},
            "trust_previous_ca": {"type": "bool", "default": False},
            "validity_hours": {"type": "int", "default": 8760},
        },
    },
    "secrets_file": {"type": "path"},
    "previous_talosconfig": {
        "type": "dict",
        "options": {
            "src": {"type": "path", "required": True},
            "dest": {"type": "path", "required": True},
        },
    },
    "return_key": {"type": "bool", "default": False},
    # Where the key of the CA being replaced is read (a control plane's root secrets), to keep it for a rollback.
    "previous_ca_source": {
        "type": "dict",
        "options": {
            "talosconfig": {"type": "path", "required": True},
            "context": {"type": "str"},
            "endpoints": {"type": "list", "elements": "str"},
        },
    },
    "rolled_back": {"type": "bool", "default": False},
})

# A client certificate closer than this to expiry is reissued on the next run.
CLIENT_RENEW_BEFORE = datetime.timedelta(days=30)
# What Talos issues from the Kubernetes CA for `talosctl kubeconfig`: an admin client certificate valid a year.
KUBECONFIG_CLIENT_VALIDITY_HOURS = 8760
# A CA that lives less than a year means another rotation within the year: allowed (when its clients live shorter), warned.
WARN_BELOW_HOURS = 8760


def run(params, check_mode=False, diff=False, sealing=None):
    if params["kind"] == _pki.KIND_SERVICE_ACCOUNT:
        return _run_service_account(params, check_mode, sealing)
    warnings = check_validity(params)
    rotation = _rotation_store.load(params["path"], kind=params["kind"], sealing=sealing)
    if params.get("rolled_back"):
        return _mark_rolled_back(rotation, params, check_mode)
    result = {"changed": False, "throwaway": False, "archived": None}
    if rotation is not None and params["start_new"]:
        result["archived"] = _archive_completed(rotation, params, check_mode)
        if result["archived"]:
            rotation = None
        else:
            result["warnings"] = [_resuming_warning(rotation)]
    resumed = rotation is not None
    if not resumed:
        rotation = _create(params, check_mode, sealing)
        result.update(changed=True, throwaway=check_mode)
        rotation.record("ca_generated", ca_fingerprint=rotation.ca_fingerprint, previous_ca_fingerprint=rotation.previous_ca_fingerprint)
    ca = rotation.ca()
    _pki.validate_ca(ca.crt, ca.key, what="rotation CA in %s" % rotation.path)
    # A rotation started before the old key was kept: keep it now (once the rotation proved whole) if the cluster
    # still issues with that CA.
    if resumed and not rotation.has_previous_ca_key and params.get("previous_ca_source") and not check_mode:
        result["changed"] |= _keep_previous_ca_key(rotation, params, sealing)
    result.update(rotation.facts(), ca=_pki.describe_certificate(ca.crt), previous_ca=_pki.describe_certificate(rotation.previous_ca_cert()))
    if params["talosconfig"]:
        result["talosconfig"] = _issue_talosconfig(params["talosconfig"], rotation, ca, check_mode, sealing)
        result["changed"] |= result["talosconfig"]["changed"]
        if result["talosconfig"]["changed"] and not check_mode:
            rotation.record("talosconfig_written", path=result["talosconfig"]["path"], context=result["talosconfig"]["context"])
    if params["previous_talosconfig"]:
        result["previous_talosconfig"] = _keep_previous_talosconfig(params["previous_talosconfig"], check_mode, sealing)
        result["changed"] |= result["previous_talosconfig"]["changed"]
    if params["secrets_file"]:
        result["secrets_file"] = _update_secrets(params["secrets_file"], rotation, ca, check_mode, sealing)
        result["changed"] |= result["secrets_file"]["changed"]
        if result["secrets_file"]["changed"] and not check_mode:
            rotation.record("secrets_file_updated", path=result["secrets_file"]["path"])
    if params.get("complete"):  # callers that build params by hand may leave it out
        result["completion"] = _complete(rotation, check_mode)
        result["changed"] |= result["completion"]["changed"]
        result["completed"] = rotation.completed
    if warnings:
        result["warnings"] = result.get("warnings", []) + warnings
    if params["return_key"]:
        # The caller asked for the key: the whole result is hidden from output and logs.
        result.update(ca_key=ca.key.decode(), _ansible_no_log=True)
    return result


def _run_service_account(params, check_mode, sealing):
    """The new service-account signing key, on disk before any node sees it; previous_ca is the current signing key's public
    key (PEM, or the hex of its DER as talos_cluster_info returns it; a private key is read for its public part only). No
    certificate: validity_hours does not apply."""
    for option in ("talosconfig", "previous_talosconfig", "return_key"):
        if params[option]:
            raise ConfigError("%s does not apply to kind=service_account (a signing key, not a CA)." % option)
    rotation = _rotation_store.load(params["path"], kind=_pki.KIND_SERVICE_ACCOUNT, sealing=sealing)
    result = {"changed": False, "throwaway": False, "archived": None}
    if rotation is not None and params["start_new"]:
        # As for the CAs: only a rotation recorded as completed is archived; one in progress is resumed, with a warning.
        if not rotation.completed:
            result["warnings"] = [_resuming_warning(rotation)]
        else:
            current = params["previous_ca"]
            if not current or _previous_public_key(current) != rotation.ca_fingerprint:
                raise RotationStateError(
                    "start_new was asked and the service-account key rotation in %s completed (%s), but the control planes "
                    "no longer sign with its new key %s: another rotation changed the cluster since. Finish that one from its "
                    "own rotation directory, or point the rotation directory at it; nothing was changed." % (
                        rotation.path, rotation.completed, rotation.ca_fingerprint[:16]))
            if check_mode:
                result["archived"] = rotation.path + ".archived-<time>"
            else:
                rotation.record("rotation_archived", ca_fingerprint=rotation.ca_fingerprint)
                result["archived"] = _rotation_store.archive(rotation.path)
            rotation = None
    if rotation is None:
        if not params["create"]:
            raise RotationStateError("no service-account key rotation in %s and create=false: the key this step expects is "
                                     "missing. Restore the rotation directory from a backup; never start over once nodes have "
                                     "seen the key." % params["path"])
        if not params["previous_ca"]:
            raise RotationStateError("previous_ca is required to start a service-account key rotation: give the current "
                                     "signing key's public key (PEM), e.g. from talos_cluster_info's service_account.")
        previous = _previous_public_pem(params["previous_ca"])
        key = _pki.generate_service_account_key(params["algorithm"])
        path = throwaway_dir() if check_mode else params["path"]
        rotation = _rotation_store.create_service_account(path, previous, key, sealing=sealing)
        result.update(changed=True, throwaway=check_mode)
        rotation.record("key_generated", ca_fingerprint=rotation.ca_fingerprint,
                        previous_ca_fingerprint=rotation.previous_ca_fingerprint)
    key = rotation.signing_key()
    result.update(rotation.facts(), algorithm=_pki.key_type(key, "rotation service-account key"))
    if params["secrets_file"]:
        result["secrets_file"] = _update_secrets_service_account(params["secrets_file"], rotation, key, check_mode, sealing)
        result["changed"] |= result["secrets_file"]["changed"]
        if result["secrets_file"]["changed"] and not check_mode:
            rotation.record("secrets_file_updated", path=result["secrets_file"]["path"])
    if params.get("complete"):  # the control planes sign with the new key alone, the old one is refused
        result["completion"] = _complete(rotation, check_mode)
        result["changed"] |= result["completion"]["changed"]
        result["completed"] = rotation.completed
    return result


def _previous_public_pem(text):
    """previous_ca of kind=service_account: a PEM key (public, or private for its public part) or the hex of the PKIX DER."""
    text = text.strip()
    return text.encode() if text.startswith("-----BEGIN") else _pki.public_key_from_hex(text, "previous_ca")


def _previous_public_key(text):
    return _pki.public_key_fingerprint(_previous_public_pem(text), "previous_ca")


def _update_secrets_service_account(path, rotation, key, check_mode, sealing):
    """certs.k8sserviceaccount.key := the new key, from the previous key only (another cluster's bundle is refused)."""
    bundle = SecretsBundle.load(path, sealing=sealing)
    current = _pki.public_key_fingerprint(bundle.get_service_account_key(), "%s certs.k8sserviceaccount.key" % path)
    if current == rotation.ca_fingerprint:
        return {"path": path, "changed": False, "backup": None}
    if current != rotation.previous_ca_fingerprint:
        raise ConfigError("%s holds a service-account key (public key %s) that is neither the rotation's previous key nor its "
                          "new key: it belongs to another cluster. Point secrets_file at this cluster's secrets.yaml."
                          % (path, current[:16]))
    if check_mode:
        return {"path": path, "changed": True, "backup": None}
    bundle.set_service_account_key(key)
    return {"path": path, "changed": True, "backup": bundle.save(path, backup=True, sealing=sealing)}


def client_validity_hours(params):
    """How long the client certificates the new CA signs live: the talosconfig's (talos), Talos' admin kubeconfig's (kubernetes)."""
    if params["kind"] == "kubernetes":
        return KUBECONFIG_CLIENT_VALIDITY_HOURS
    return (params.get("talosconfig") or {}).get("validity_hours") or _pki.CLIENT_VALIDITY_HOURS


def check_validity(params):
    """Refuse a CA lifetime that is not a positive number of hours, shorter than the client certificates it signs, or beyond
    the dates certificates can carry, before anything is written; warnings for a CA that lives less than a year."""
    hours, clients = params["validity_hours"], client_validity_hours(params)
    bounds = ("give validity_hours between %d (the client certificates' lifetime) and %d (100 years); Talos uses %d (ten years)"
              % (clients, _pki.MAX_VALIDITY_HOURS, _pki.CA_VALIDITY_HOURS))
    if hours < 1:
        raise ConfigError("validity_hours of the new %s CA is %d: validity_hours must be a positive number of hours: %s." % (
            params["kind"], hours, bounds))
    if hours < clients:
        raise ConfigError("validity_hours of the new %s CA is %d, shorter than the %d hours of the client certificates it signs "
                          "(%s): they would outlive their CA and stop working with it, and the cluster would need another "
                          "rotation before then: %s." % (params["kind"], hours, clients, "the admin kubeconfig Talos issues"
                                                         if params["kind"] == "kubernetes" else "the admin talosconfig", bounds))
    if hours > _pki.MAX_VALIDITY_HOURS:
        raise ConfigError("validity_hours of the new %s CA is %d, beyond the %d hours (100 years) a certificate's dates are "
                          "given for: %s." % (params["kind"], hours, _pki.MAX_VALIDITY_HOURS, bounds))
    if hours < WARN_BELOW_HOURS:
        return ["the new %s CA is valid for %d hours, less than a year: the cluster needs another CA rotation before it expires "
                "(Talos uses %d hours, ten years)." % (params["kind"], hours, _pki.CA_VALIDITY_HOURS)]
    return []


def _keep_previous_talosconfig(options, check_mode, sealing):
    """Copy the talosconfig in use before the rotation once (0600; encrypted under encrypt_dir): the old credentials
    the rotation proves refused at the end, and a backup. An existing copy is kept whatever the source has become."""
    outcome = {"path": options["dest"], "changed": False}
    if os.path.lexists(options["dest"]):
        return outcome
    data = _files.read_bytes(options["src"], "talosconfig", sealing=sealing)
    if not check_mode:
        _files.atomic_write(options["dest"], data, sealing=sealing)
    return dict(outcome, changed=True)


def _archive_completed(rotation, params, check_mode):
    """Move a completed rotation aside and return where it went; None for one still in progress, which the run resumes:
    archiving it would lose its CA mid-way, and a rerun of the same command after an interruption must finish it."""
    if not rotation.completed:
        return None
    current = params["previous_ca"]
    if not current or _pki.fingerprint(current.encode()) != rotation.ca_fingerprint:
        raise RotationStateError(
            "start_new was asked and the rotation in %s completed (%s), but the cluster's issuing CA is no longer its new CA %s: "
            "another rotation changed the cluster since (from another rotation directory, controller or tool). Finish that one "
            "from its own rotation directory, or point the rotation directory at it; nothing was changed." % (
                rotation.path, rotation.completed, rotation.ca_fingerprint[:16]))
    if check_mode:
        return rotation.path + ".archived-<time>"
    rotation.record("rotation_archived", ca_fingerprint=rotation.ca_fingerprint)
    return _rotation_store.archive(rotation.path)


def _resuming_warning(rotation):
    return ("start_new: the %s CA rotation in %s (new CA %s, started %s) has not completed yet, so this run resumes it with its "
            "own CA instead of starting another. Once it has completed (every node on its new CA alone, the credentials "
            "written), start_new archives it and starts the next rotation." % (
                rotation.kind, rotation.path, rotation.ca_fingerprint[:16], rotation.created))


def _complete(rotation, check_mode):
    """Mark the rotation completed: the caller has proven every node on the new CA alone and written the credentials."""
    outcome = {"path": rotation.path, "changed": not rotation.completed}
    if outcome["changed"] and not check_mode:
        rotation.mark_completed()
        rotation.record("rotation_completed", ca_fingerprint=rotation.ca_fingerprint)
    return outcome


def _create(params, check_mode, sealing):
    if not params["create"]:
        raise RotationStateError("no %s CA rotation in %s and create=false: the CA this step expects is missing. Restore the "
                                 "rotation directory from a backup; never start over once nodes have seen the CA." % (params["kind"], params["path"]))
    if not params["previous_ca"]:
        raise RotationStateError("previous_ca is required to start a rotation: give the current issuing CA certificate (PEM) "
                                 "of the cluster, e.g. from talos_cluster_info's issuing_ca.")
    previous = params["previous_ca"].encode()
    _pki.validate_ca(previous, what="previous CA")
    # The rotation marker makes this rotation visible on the cluster to runs from any other directory or controller.
    marker = _claim.new_marker(_pki.fingerprint(previous))
    new_ca = _pki.generate_ca(params["kind"], params["algorithm"], validity_hours=params["validity_hours"], marker=marker)
    # Check mode must not touch the rotation directory, yet later dry runs need a CA with a key:
    # a throwaway CA no node will ever trust goes to a private temp dir instead.
    path = throwaway_dir() if check_mode else params["path"]
    previous_crt = _pki.split_pem_certificates(previous)[0]
    # The old CA's key lands with the new CA, before any node sees either: a rollback issues with it again.
    previous_key = None if check_mode else _previous_ca_key(params, previous_crt, sealing)
    return _rotation_store.create(path, params["kind"], previous_crt, new_ca, previous_ca_key=previous_key, sealing=sealing)


THROWAWAY_PREFIX = "talosops-pki-check-"
THROWAWAY_OWNER = "owner.json"
# A throwaway folder whose owner cannot be told (written by an older version) is swept once it is this old.
THROWAWAY_MAX_AGE = 86400


def throwaway_dir(tmp=None):
    """A private folder for a check-mode CA (its path + /ca), which no node will ever trust.

    The role deletes it at the end of a check run; a check run that failed or was killed left it behind, with a key
    in it. So each new one first sweeps the folders of check runs that are over: the ansible-playbook process that
    made it (owner.json) is gone from this host (or, without owner.json, the folder is a day old)."""
    tmp = tmp or tempfile.gettempdir()
    for name in os.listdir(tmp):
        folder = os.path.join(tmp, name)
        if name.startswith(THROWAWAY_PREFIX) and _throwaway_is_over(folder):
            shutil.rmtree(folder, ignore_errors=True)
    folder = tempfile.mkdtemp(prefix=THROWAWAY_PREFIX, dir=tmp)
    owner = {"pid": rotation_lock.owner_pid(), "host": socket.gethostname()}
    with open(os.path.join(folder, THROWAWAY_OWNER), "w", encoding="utf-8") as handle:
        json.dump(owner, handle)
    return folder + "/ca"


def _throwaway_is_over(folder):
    try:
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return False  # another user's, or not a folder this module made: never touched
        with open(os.path.join(folder, THROWAWAY_OWNER), encoding="utf-8") as handle:
            owner = json.load(handle)
    except FileNotFoundError:
        return time.time() - info.st_mtime > THROWAWAY_MAX_AGE
    except (OSError, ValueError):
        return False
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _keep_previous_ca_key(rotation, params, sealing):
    key = _previous_ca_key(params, rotation.previous_ca_cert(), sealing)
    if not key:
        return False
    rotation.keep_previous_ca_key(key)
    rotation.record("previous_ca_key_kept", previous_ca_fingerprint=rotation.previous_ca_fingerprint)
    return True


def _previous_ca_key(params, previous_crt, sealing):
    """The key of the CA being replaced, from the root secrets the endpoint (a control plane) holds; None without a
    source, or when the endpoint no longer issues with that CA (it has swapped)."""
    source = params.get("previous_ca_source")
    if not source:
        return None
    root = run_async(_read_root(Target(source, sealing=sealing), params["kind"]))
    issuing = (root or {}).get("issuing_ca") or {}
    if not issuing.get("key") or _pki.fingerprint(issuing["crt"]) != _pki.fingerprint(previous_crt):
        return None
    return issuing["key"]


async def _read_root(target, kind):
    async with target.client() as client:
        return await (client.os_root() if kind == "talos" else client.kubernetes_root())


def _mark_rolled_back(rotation, params, check_mode):
    """Keep a rolled-back rotation as <path>.rolled-back-<time>: its CA is trusted nowhere any more, and it is never resumed."""
    if rotation is None:
        raise RotationStateError("rolled_back was asked but %s holds no %s CA rotation: there is nothing to mark as rolled back "
                                 "(a rotation already rolled back was moved to %s.rolled-back-<time>)." % (params["path"], params["kind"], params["path"]))
    facts = dict(rotation.facts(), changed=True, throwaway=False, archived=None)
    if check_mode:
        return dict(facts, rolled_back_to=rotation.path + ".rolled-back-<time>")
    rotation.record("rotation_rolled_back", ca_fingerprint=rotation.ca_fingerprint, previous_ca_fingerprint=rotation.previous_ca_fingerprint)
    return dict(facts, rolled_back_to=_rotation_store.mark_rolled_back(rotation.path))


def _issue_talosconfig(options, rotation, ca, check_mode, sealing):
    """Write (or keep) a talosconfig context whose client cert comes from the rotation's CA."""
    server_cas = ca.crt + (rotation.previous_ca_cert() if options["trust_previous_ca"] else b"")
    try:
        existing = TalosConfig.load(options["path"], sealing=sealing)
    except ConfigError:
        existing = None
    current = _current_context(existing, options["context"])
    reusable = current is not None and _client_reusable(current, ca, options["roles"])
    desired_crt, desired_key = (current.crt, current.key) if reusable else (None, None)
    wanted = _endpoints_and_nodes(options, current)
    unchanged = reusable and (current.endpoints, current.nodes) == wanted and _pki.split_pem_certificates(current.ca) == _pki.split_pem_certificates(server_cas)
    outcome = {"path": options["path"], "context": options["context"], "changed": not unchanged}
    if unchanged or check_mode:
        return outcome
    if not reusable:
        issued = _pki.issue_client_certificate(ca, roles=options["roles"], validity_hours=options["validity_hours"])
        desired_crt, desired_key = issued.crt, issued.key
    talosconfig = existing or TalosConfig.empty()
    talosconfig.set_context(TalosContext(options["context"], wanted[0], wanted[1], server_cas, desired_crt, desired_key), make_current=True)
    talosconfig.save(options["path"], sealing=sealing)
    return outcome


def _endpoints_and_nodes(options, current):
    """Given endpoints/nodes, else the context's own: the user's defaults survive a credentials refresh."""
    endpoints = options["endpoints"] if options["endpoints"] is not None else (current.endpoints if current else None)
    if not endpoints:
        raise ConfigError("talosconfig.endpoints is required to create context %s in %s: give the control-plane endpoints." % (
            options["context"], options["path"]))
    nodes = options["nodes"] if options["nodes"] is not None else (current.nodes if current else ())
    return tuple(endpoints), tuple(nodes)


def _current_context(talosconfig, name):
    if talosconfig is None or name not in talosconfig.context_names:
        return None
    return talosconfig.get_context(name)


def _client_reusable(context, ca, roles):
    try:
        cert = _pki.load_certificate(context.crt)
        _pki.check_key_pair(context.crt, context.key, what="client certificate")
    except Exception:  # pylint: disable=broad-except
        return False  # anything unusable is replaced, which is what the caller wants
    facts = _pki.describe_certificate(cert)
    not_after = datetime.datetime.strptime(facts["not_after"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    return (_pki.is_issued_by(context.crt, ca.crt) and sorted(facts["organization"]) == sorted(roles)
            and not_after - datetime.datetime.now(datetime.timezone.utc) > CLIENT_RENEW_BEFORE)


def _update_secrets(path, rotation, ca, check_mode, sealing):
    bundle = SecretsBundle.load(path, sealing=sealing)
    current_crt, current_key = bundle.get_ca(rotation.kind)
    current_fingerprint = _pki.fingerprint(current_crt)
    if current_fingerprint == rotation.ca_fingerprint and current_key:
        _pki.check_key_pair(current_crt, current_key, what="%s CA in %s" % (rotation.kind, path))
        return {"path": path, "changed": False, "backup": None}
    if current_fingerprint not in (rotation.previous_ca_fingerprint, rotation.ca_fingerprint):
        raise ConfigError("%s holds a %s CA (%s) that is neither the rotation's previous CA nor its new CA: it belongs to another "
                          "cluster. Point secrets_file at this cluster's secrets.yaml." % (path, rotation.kind, current_fingerprint[:16]))
    if check_mode:
        return {"path": path, "changed": True, "backup": None}
    bundle.set_ca(rotation.kind, ca.crt, ca.key)
    return {"path": path, "changed": True, "backup": bundle.save(path, backup=True, sealing=sealing)}
