# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""talos_machine_patch: bring one node's CA fields to the state of one rotation phase."""

from __future__ import annotations

import re
import time

from ansible_collections.talosops.pki.plugins.module_utils import _files, _pki, _rotation, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._auth import Target, with_auth
from ansible_collections.talosops.pki.plugins.module_utils._client import run as run_async
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, RotationStateError
from ansible_collections.talosops.pki.plugins.module_utils._kubelet import KubeletWatch
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import (
    LOCATION_LEGACY_SERVICE_ACCOUNT,
    LOCATION_SERVICE_ACCOUNT_CONFIG,
    MachineConfig,
)

ARGUMENT_SPEC = _files.with_encryption(with_auth({
    "node": {"type": "str", "required": True},
    "phase": {"type": "str", "required": True, "choices": list(_rotation.PHASES)},
    "ca": {"type": "str", "default": "talos", "choices": ["talos", "kubernetes", "service_account"]},
    "rotation_dir": {"type": "path", "required": True},
    "machine_type": {"type": "str", "choices": ["controlplane", "worker"]},
    "apply_mode": {"type": "str", "default": "no_reboot", "choices": ["no_reboot", "auto"]},
    "wait_kubelet": {"type": "bool", "default": False},
    "kubelet_timeout": {"type": "float", "default": 300.0},
    "remove_stray_cas": {"type": "bool", "default": False},
}))

REDACTED = "<redacted>"
# Key material a node may echo in a dry-run diff: `key: <base64>` values and raw PEM private keys.
_KEY_VALUE = re.compile(r"(\bkey:\s*)(?!\"\"|''|$)\S+", re.MULTILINE)
_PEM_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----", re.DOTALL)
_PEM_BODY_LINE = re.compile(r"^([+\- ]?\s*)[A-Za-z0-9+/=]{40,}$", re.MULTILINE)
# The last, shorter line of a PEM body, right before its END marker (a diff hunk may cut the BEGIN line off).
_PEM_LAST_BODY_LINE = re.compile(r"^([+\- ]?\s*)[A-Za-z0-9+/=]+$(?=\n[+\- ]?\s*-----END [A-Z0-9 ]*PRIVATE KEY-----)", re.MULTILINE)


def run(params, check_mode=False, diff=False):
    if params["wait_kubelet"] and params["ca"] != "kubernetes":
        raise ConfigError("wait_kubelet needs ca=kubernetes: only a Kubernetes CA change restarts the kubelet; a Talos API CA "
                          "change would leave the wait to time out.")
    if params["kubelet_timeout"] <= 0:
        raise ConfigError("kubelet_timeout must be a positive number of seconds (a kubelet restart usually takes well under a minute).")
    rotation = _rotation_store.load(params["rotation_dir"], kind=params["ca"])
    if rotation is None:
        raise RotationStateError("no %s CA rotation in %s: run talos_ca_generate for it first." % (params["ca"], params["rotation_dir"]))
    target = Target(params)
    started = time.time()
    patch = _patch_service_account if params["ca"] == _pki.KIND_SERVICE_ACCOUNT else _patch
    result = run_async(patch(params, target, rotation, check_mode, diff))
    # Epoch seconds, so a summary can tell each phase's wall time across hosts (first start to last finish).
    result.update(started=round(started, 3), finished=round(time.time(), 3))
    if result["changed"] and not check_mode:
        rotation.record("node_patched", node=result["node"], phase=result["phase"], progress_before=result["progress_before"],
                        progress_after=result["progress_after"], issuing_ca_fingerprint=result["issuing_ca_fingerprint"],
                        accepted_ca_fingerprints=result["accepted_ca_fingerprints"], apply_mode=result["apply_mode"],
                        seconds=round(result["finished"] - result["started"], 3))
    return result


async def _patch(params, target, rotation, check_mode, diff):
    node, kind, phase = params["node"], params["ca"], params["phase"]
    new_ca, old_crt = rotation.ca(), rotation.previous_ca_cert()
    async with target.client() as client:
        config = MachineConfig.parse(await client.machine_config(node=node), source="machine config of %s" % node)
        _check_machine_type(node, config.machine_type, params["machine_type"])
        current = config.get_ca(kind)
        before = _node_cas(current)
        issuing, accepted = _rotation.desired_state(phase, before, rotation.previous_ca_fingerprint, rotation.ca_fingerprint,
                                                    node=node, preview=check_mode, remove_strays=params["remove_stray_cas"])
        result = {
            "node": node,
            "machine_type": config.machine_type,
            "phase": phase,
            "progress_before": _rotation.progress(before, rotation.previous_ca_fingerprint, rotation.ca_fingerprint),
            "stray_ca_fingerprints": list(_rotation.strays(before, rotation.previous_ca_fingerprint, rotation.ca_fingerprint)),
        }
        after = _rotation.NodeCAs(issuing, accepted)
        result["progress_after"] = _rotation.progress(after, rotation.previous_ca_fingerprint, rotation.ca_fingerprint)
        result["issuing_ca_fingerprint"], result["accepted_ca_fingerprints"] = issuing, list(accepted)
        if after == before:
            return dict(result, changed=False)

        certificates = _certificates_by_fingerprint(current, old_crt, new_ca.crt)
        control_plane = config.machine_type != "worker"
        if issuing == rotation.ca_fingerprint and before.issuing != issuing:
            issuing_key = new_ca.key if control_plane else None  # workers never hold a CA key
        else:
            issuing_key = current.issuing_key
        # A node without an issuing CA field (v1.14+ worker, Kubernetes CA) keeps that shape: issuing stays None.
        desired = (certificates[issuing] if issuing else None, issuing_key, tuple(certificates[fp] for fp in accepted))
        if kind == "talos" and not check_mode:  # a dry run locks nobody out
            _refuse_lockout(node, target.credentials.crt, desired)
        config.set_ca(kind, *desired)
        # A dry run restarts nothing; a change that leaves the node's CA bundle as it was restarts nothing either.
        if params["wait_kubelet"] and not check_mode and _bundle(before) != _bundle(after):
            step = "the %s phase of the Kubernetes CA rotation" % phase
            async with KubeletWatch(client, node, params["kubelet_timeout"], step) as kubelet:
                await kubelet.wait_ready()
                applied = await client.apply_configuration(config.to_bytes(), node=node, mode=params["apply_mode"])
                result["kubelet"] = await kubelet.wait_restart()
        else:
            applied = await client.apply_configuration(config.to_bytes(), node=node, mode=params["apply_mode"], dry_run=check_mode)
    result.update(changed=True, apply_mode=applied.get("mode"), warnings=list(applied.get("warnings") or []))
    if check_mode:
        result["dry_run_summary"] = redact_key_material(applied.get("mode_details", ""))
    if diff:
        result["diff"] = {"before": _describe_fields(current.issuing_crt, current.issuing_key, current.accepted),
                          "after": _describe_fields(*desired),
                          "before_header": "%s %s CA fields" % (node, kind), "after_header": "%s %s CA fields" % (node, kind)}
    return result


async def _patch_service_account(params, target, rotation, check_mode, diff):
    """The service-account keys of one control plane (KubeServiceAccountConfig issuer.privateKey / accepted.publicKeys) to
    the state of one phase; progress read from the live fields, as public-key fingerprints."""
    node, phase = params["node"], params["phase"]
    old, new = rotation.previous_ca_fingerprint, rotation.ca_fingerprint
    async with target.client() as client:
        config = MachineConfig.parse(await client.machine_config(node=node), source="machine config of %s" % node)
        _check_machine_type(node, config.machine_type, params["machine_type"])
        current = service_account_fields(node, config)
        before = _rotation.NodeCAs(_pki.public_key_fingerprint(current.signing_key, "signing key of %s" % node),
                                   tuple(_pki.public_key_fingerprint(pem, "accepted public key of %s" % node) for pem in current.accepted))
        issuing, accepted = _rotation.desired_state(phase, before, old, new, node=node, preview=check_mode,
                                                    remove_strays=params["remove_stray_cas"])
        after = _rotation.NodeCAs(issuing, accepted)
        result = {
            "node": node, "machine_type": config.machine_type, "phase": phase,
            "progress_before": _rotation.progress(before, old, new), "progress_after": _rotation.progress(after, old, new),
            "stray_ca_fingerprints": list(_rotation.strays(before, old, new)),
            "issuing_ca_fingerprint": issuing, "accepted_ca_fingerprints": list(accepted),
        }
        if after == before:
            return dict(result, changed=False)
        publics = dict(zip(before.accepted, current.accepted))
        publics.update({old: rotation.previous_public_key(), new: rotation.public_key()})
        signing_key = rotation.signing_key() if issuing == new else current.signing_key
        config.set_service_account(signing_key, [publics[fp] for fp in accepted])
        applied = await client.apply_configuration(config.to_bytes(), node=node, mode=params["apply_mode"], dry_run=check_mode)
    result.update(changed=True, apply_mode=applied.get("mode"), warnings=list(applied.get("warnings") or []))
    if check_mode:
        result["dry_run_summary"] = redact_key_material(applied.get("mode_details", ""))
    if diff:
        header = "%s service-account keys (public-key fingerprints)" % node
        result["diff"] = {"before": {"signing_key": REDACTED + " " + before.issuing, "accepted_public_keys": list(before.accepted)},
                          "after": {"signing_key": REDACTED + " " + issuing, "accepted_public_keys": list(accepted)},
                          "before_header": header, "after_header": header}
    return result


def service_account_fields(node, config):
    """The node's service-account keys, or a refusal saying why this node cannot take part in the graceful rotation."""
    if not config.is_control_plane:
        raise RotationStateError("%s is a worker: service-account keys live on control planes only (Talos refuses a "
                                 "KubeServiceAccountConfig on a worker); patch the control planes." % node)
    if config.service_account_location == LOCATION_LEGACY_SERVICE_ACCOUNT:
        raise RotationStateError(
            "%s keeps its service-account key in %s (Talos v1.13 or older), which has no accepted-keys list: the key cannot be "
            "rotated without invalidating every token at once. Upgrade the node to Talos v1.14+ (its config then carries a %s "
            "document) and run again; nothing was changed." % (node, LOCATION_LEGACY_SERVICE_ACCOUNT, LOCATION_SERVICE_ACCOUNT_CONFIG))
    fields = config.get_service_account()
    if fields is None or not fields.signing_key:
        raise RotationStateError("%s has no service-account signing key in its machine config (%s issuer.privateKey): restore "
                                 "it before rotating; nothing was changed." % (node, LOCATION_SERVICE_ACCOUNT_CONFIG))
    return fields


def _bundle(node_cas):
    """The node's CA bundle as the kubelet gets it: accepted CAs then the issuing CA, in order."""
    return node_cas.accepted + ((node_cas.issuing,) if node_cas.issuing else ())


def _node_cas(fields):
    return _rotation.NodeCAs(_pki.fingerprint(fields.issuing_crt) if fields.issuing_crt else None,
                             tuple(_pki.fingerprint(crt) for crt in fields.accepted))


def _certificates_by_fingerprint(current, old_crt, new_crt):
    known = [crt for crt in (current.issuing_crt, old_crt, new_crt) if crt] + list(current.accepted)
    return {_pki.fingerprint(crt): crt for crt in known}


def _check_machine_type(node, actual, expected):
    if expected is None:
        return
    actual_group = "worker" if actual == "worker" else "controlplane"  # init nodes are control planes
    if actual_group != expected:
        raise RotationStateError("%s is a %s node (machine.type %s) but the inventory lists it as %s: fix the inventory group "
                                 "before rotating, control planes must be patched before workers." % (node, actual_group, actual, expected))


def _refuse_lockout(node, client_crt, desired):
    """The node must still trust the client certificate this task authenticates with."""
    issuing_crt, accepted = desired[0], desired[2]
    pool = [crt for crt in (issuing_crt,) + accepted if crt]
    if not any(_pki.is_issued_by(client_crt, ca) for ca in pool):
        raise RotationStateError(
            "refusing to patch %s: afterwards it would no longer trust the client certificate this task uses, and every "
            "later call would be refused. Use a talosconfig issued by a CA the node keeps (the rotation's new admin "
            "talosconfig after the accept phase)." % node)


def _describe_fields(issuing_crt, issuing_key, accepted):
    def cert(crt):
        facts = _pki.describe_certificate(crt)
        return {key: facts[key] for key in ("fingerprint_sha256", "subject", "not_after")}
    described = {"issuing_ca": cert(issuing_crt) if issuing_crt else None, "accepted_cas": [cert(crt) for crt in accepted]}
    if described["issuing_ca"] is not None:
        described["issuing_ca"]["key"] = REDACTED if issuing_key else None
    return described


def redact_key_material(text):
    """Mask private keys in text that came from a node (a dry-run diff may include them)."""
    text = _PEM_PRIVATE_KEY.sub(REDACTED, text)
    text = _KEY_VALUE.sub(lambda match: match.group(1) + REDACTED, text)
    # A raw-PEM key block split across diff lines (v1.14+ documents hold raw PEM), or cut by the hunk's edge: its
    # base64 body lines are masked too, the short last one included.
    text = _PEM_LAST_BODY_LINE.sub(lambda match: match.group(1) + REDACTED, text)
    return _PEM_BODY_LINE.sub(lambda match: match.group(1) + REDACTED, text)
