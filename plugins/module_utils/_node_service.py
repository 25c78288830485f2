# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""One node's CA state: read it, compute the state a phase wants (pure), apply it (dry run or real), wait for the kubelet.

The steps of a node patch, each in one place:

  read            NodeService.read          the active machine config, parsed once (NodeState)
  fingerprints    NodeState.ca              a kind's fields (PEM) and their fingerprints, computed once per kind
  type check      check_machine_type        the node's machine.type against the inventory's
  target state    plan                      the phase's (or rollback phase's) fields, as fingerprints (_rotation)
  certificates    plan                      the PEM of every fingerprint the target names
  key policy      issuing_key               which key goes with the issuing CA (new/previous on control planes, none on workers)
  lockout guard   refuse_lockout            a Talos API CA change must keep trusting the client certificate in use
  edit            NodeService.apply         the fields set on the parsed config (nothing else changes)
  kubelet watch   NodeService.apply         with wait_kubelet, the restart a new CA bundle causes, watched from before the apply
  apply           NodeService.apply         ApplyConfiguration, as a dry run when the service is one

The service takes what it works with - the Talos client, the rotation (rotation store), the run guard - from its caller:
it reads no global, so tests drive it with a fake client.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

from ansible_collections.talosops.pki.plugins.module_utils import _pki, _rotation
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, RotationStateError
from ansible_collections.talosops.pki.plugins.module_utils._kubelet import KubeletWatch
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import (
    LOCATION_LEGACY_SERVICE_ACCOUNT,
    LOCATION_SERVICE_ACCOUNT_CONFIG,
    MachineConfig,
)

KIND_SERVICE_ACCOUNT = _pki.KIND_SERVICE_ACCOUNT
KIND_KUBERNETES = _pki.KIND_KUBERNETES


class CAState(NamedTuple):
    """One kind of CA on one node: the fields as the config holds them (PEM) and as fingerprints.

    For the service-account keys the "issuing CA" is the signing key and the fingerprints are those of public keys."""
    fields: object  # _machineconfig.CAFields, or ServiceAccountFields for KIND_SERVICE_ACCOUNT
    cas: _rotation.NodeCAs


class NodeState:
    """A node's active machine config as read once: parsed once, each kind's fingerprints computed once."""

    def __init__(self, node, config, version=None):
        self.node = node
        self.config = config
        self.version = version  # the Version reply, when the read asked for it
        self.applied_at = None  # the event loop's clock when an apply of this node's config returned
        self._cas = {}

    @property
    def machine_type(self):
        return self.config.machine_type

    @property
    def is_control_plane(self):
        return self.config.is_control_plane

    def ca(self, kind):
        """The CAState of `kind` (a refusal naming the node when this node cannot carry it)."""
        if kind not in self._cas:
            if kind == KIND_SERVICE_ACCOUNT:
                fields = service_account_fields(self.node, self.config)
                cas = _rotation.NodeCAs(
                    _pki.public_key_fingerprint(fields.signing_key, "signing key of %s" % self.node),
                    tuple(_pki.public_key_fingerprint(pem, "accepted public key of %s" % self.node) for pem in fields.accepted))
            else:
                fields = self.config.get_ca(kind)
                cas = node_cas(fields)
            self._cas[kind] = CAState(fields, cas)
        return self._cas[kind]

    def set(self, kind, desired):
        """Write `desired` (Plan.desired) into the parsed config: only that kind's fields change."""
        if kind == KIND_SERVICE_ACCOUNT:
            self.config.set_service_account(*desired)
        else:
            self.config.set_ca(kind, *desired)
        self._cas.pop(kind, None)

    def progress(self, kind, rotation):
        """pending / accepted / swapped / removed / foreign of this node in `rotation` (a _rotation_store.Rotation)."""
        return _rotation.progress(self.ca(kind).cas, rotation.previous_ca_fingerprint, rotation.ca_fingerprint)


def node_cas(fields):
    """CA fields (PEM) as fingerprints."""
    return _rotation.NodeCAs(_pki.fingerprint(fields.issuing_crt) if fields.issuing_crt else None,
                             tuple(_pki.fingerprint(crt) for crt in fields.accepted))


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


def check_machine_type(node, actual, expected):
    """Refuse a node whose machine.type is not the inventory's `expected` (None: not checked); init counts as controlplane."""
    if expected is None:
        return
    actual_group = "worker" if actual == "worker" else "controlplane"
    if actual_group != expected:
        raise RotationStateError("%s is a %s node (machine.type %s) but the inventory lists it as %s: fix the inventory group "
                                 "before rotating, control planes must be patched before workers." % (node, actual_group, actual, expected))


class Plan(NamedTuple):
    """Where a phase takes one kind of CA on one node: fingerprints before and after, and the fields to write."""
    kind: str
    phase: str
    before: _rotation.NodeCAs
    after: _rotation.NodeCAs
    progress_before: str
    progress_after: str
    strays: tuple
    desired: tuple  # (issuing crt, issuing key, accepted crts); service account: (signing key, accepted public keys)

    @property
    def changed(self):
        return self.after != self.before


def plan(state, kind, rotation, phase, remove_strays=False, preview=False):
    """The Plan of `phase` (or rollback phase) for `kind` on the node of `state`: pure but for reading the rotation's files.

    Refusals (remove before swap, a rollback past remove, a foreign CA) name the node; `preview` (check mode) plans a later
    phase on a node that is behind as if the earlier phases had run."""
    if kind == KIND_SERVICE_ACCOUNT and phase in _rotation.ROLLBACK_PHASES:
        raise ConfigError(ROLLBACK_SERVICE_ACCOUNT % phase)
    old, new = rotation.previous_ca_fingerprint, rotation.ca_fingerprint
    current = state.ca(kind)
    before = current.cas
    if phase in _rotation.ROLLBACK_PHASES:
        issuing, accepted = _rotation.rollback_state(phase, before, old, new, node=state.node, preview=preview)
    else:
        issuing, accepted = _rotation.desired_state(phase, before, old, new, node=state.node, preview=preview,
                                                    remove_strays=remove_strays)
    after = _rotation.NodeCAs(issuing, tuple(accepted))
    if after == before:
        desired = tuple(current.fields)
    elif kind == KIND_SERVICE_ACCOUNT:
        publics = dict(zip(before.accepted, current.fields.accepted))
        publics.update({old: rotation.previous_public_key(), new: rotation.public_key()})
        desired = (rotation.signing_key() if issuing == new else current.fields.signing_key, tuple(publics[fp] for fp in accepted))
    else:
        certificates = certificates_by_fingerprint(current.fields, rotation)
        # A node without an issuing CA field (v1.14+ worker, Kubernetes CA) keeps that shape: issuing stays None.
        desired = (certificates[issuing] if issuing else None, issuing_key(state, current, before, issuing, rotation),
                   tuple(certificates[fp] for fp in accepted))
    return Plan(kind, phase, before, after, _rotation.progress(before, old, new), _rotation.progress(after, old, new),
                tuple(_rotation.strays(before, old, new)), desired)


ROLLBACK_SERVICE_ACCOUNT = ("phase %s does not apply to ca=service_account: the replaced signing key is not kept (only its "
                            "public key), so control planes cannot sign with it again. Finish the rotation instead; nothing was "
                            "changed.")


def certificates_by_fingerprint(fields, rotation):
    """The PEM of every CA the target state may name: the node's own, the rotation's previous and new CA."""
    known = [crt for crt in (fields.issuing_crt, rotation.previous_ca_cert(), rotation.ca_cert()) if crt] + list(fields.accepted)
    return {_pki.fingerprint(crt): crt for crt in known}


def issuing_key(state, current, before, issuing, rotation):
    """The key that goes with the issuing CA: a control plane gets the new CA's key at the swap and the previous CA's
    (kept in the rotation directory) at a rollback's swap back, a worker none (workers never hold a CA key); an issuing
    CA that stays keeps its key."""
    if before.issuing != issuing and issuing == rotation.ca_fingerprint:
        return rotation.ca().key if state.machine_type != "worker" else None
    if before.issuing != issuing and issuing == rotation.previous_ca_fingerprint:
        return rotation.previous_ca().key if state.machine_type != "worker" else None
    return current.fields.issuing_key


def refuse_lockout(node, client_crt, desired):
    """A Talos API CA change must leave the node trusting the client certificate this task authenticates with."""
    issuing_crt, accepted = desired[0], desired[2]
    pool = [crt for crt in (issuing_crt,) + tuple(accepted) if crt]
    if not any(_pki.is_issued_by(client_crt, ca) for ca in pool):
        raise RotationStateError(
            "refusing to patch %s: afterwards it would no longer trust the client certificate this task uses, and every "
            "later call would be refused. Use a talosconfig issued by a CA the node keeps (the rotation's new admin "
            "talosconfig after the accept phase)." % node)


def bundle(cas):
    """The node's CA bundle as the kubelet gets it: accepted CAs then the issuing CA, in order."""
    return cas.accepted + ((cas.issuing,) if cas.issuing else ())


class NodeService:
    """Reads and applies one node's CA state through `client` (a _client.TalosClient, or a fake with its calls).

    `guard` (rotation_lock.RunGuard.check, or None) is called before every apply attempt; `dry_run` makes every apply an
    ApplyConfiguration dry run (check mode) and waits for no kubelet."""

    def __init__(self, client, guard=None, dry_run=False, apply_mode="no_reboot", kubelet_timeout=300.0):
        self.client = client
        self.guard = guard
        self.dry_run = dry_run
        self.apply_mode = apply_mode
        self.kubelet_timeout = kubelet_timeout

    async def read(self, node, version=False):
        """The node's NodeState (with its Version reply when `version`)."""
        reply = await self.client.version(node=node) if version else None
        config = MachineConfig.parse(await self.client.machine_config(node=node), source="machine config of %s" % node)
        return NodeState(node, config, reply)

    async def apply(self, state, target, wait_kubelet=False, step=None):
        """Write `target` (a Plan) into the node's config (`state` then holds what the node holds after the apply) and apply
        it. Returns (the apply reply, the kubelet's restart facts or None). With `wait_kubelet`, the restart a changed CA
        bundle causes is watched from before the apply and waited for (not in a dry run, not when the bundle stays)."""
        state.set(target.kind, target.desired)
        data = state.config.to_bytes()
        step = step or "the %s phase" % target.phase
        # Talos restarts the kubelet when the node's Kubernetes CA bundle changes; nothing else restarts it.
        if wait_kubelet and target.kind == KIND_KUBERNETES and not self.dry_run and bundle(target.before) != bundle(target.after):
            async with KubeletWatch(self.client, state.node, self.kubelet_timeout, "%s of the Kubernetes CA rotation" % step) as kubelet:
                await kubelet.wait_ready()
                applied = await self.client.apply_configuration(data, node=state.node, mode=self.apply_mode, guard=self.guard)
                state.applied_at = asyncio.get_running_loop().time()
                return applied, await kubelet.wait_restart()
        applied = await self.client.apply_configuration(data, node=state.node, mode=self.apply_mode, dry_run=self.dry_run,
                                                        guard=self.guard)
        state.applied_at = asyncio.get_running_loop().time()
        return applied, None
