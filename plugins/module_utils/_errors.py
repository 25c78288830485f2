# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""Exceptions of talosops.pki.

Every error a user can meet is a TalosPKIError whose message says what is wrong and what
to do. Modules turn it into fail_json(msg=str(error)); nothing else reaches the user.
"""

from __future__ import annotations


class TalosPKIError(Exception):
    """Base of every error the collection raises on purpose."""


# --- certificates and keys -------------------------------------------------------------

class PKIError(TalosPKIError):
    """A certificate or key cannot be used as asked."""


class NotPEMError(PKIError):
    """Input is not PEM data of the expected kind."""


class NotACAError(PKIError):
    """A leaf certificate was given where a CA is needed."""


class KeyMismatchError(PKIError):
    """A private key does not belong to the certificate it is paired with."""


class CertificateValidityError(PKIError):
    """A certificate is expired or not yet valid."""


class UnsupportedKeyError(PKIError):
    """A key type or size Talos does not use, or one too weak to trust."""


# --- files and configuration -----------------------------------------------------------

class ConfigError(TalosPKIError):
    """A machine config, talosconfig or secrets bundle cannot be read or changed as asked."""


class RotationStateError(TalosPKIError):
    """The rotation directory or the nodes' CA fields do not allow the requested step."""


# --- Talos API -------------------------------------------------------------------------

class TalosAPIError(TalosPKIError):
    """A Talos API call failed; `node` names the node when known."""

    def __init__(self, message, node=None):
        super().__init__(message)
        self.node = node


class ServerNotTrustedError(TalosAPIError):
    """The node's server certificate does not verify against our CA bundle."""


class ClientNotTrustedError(TalosAPIError):
    """The node refused our client certificate (unknown CA or wrong key usage)."""


class CertificateExpiredError(TalosAPIError):
    """A certificate in the handshake is expired (ours or the node's)."""


class PermissionDeniedError(TalosAPIError):
    """Our client certificate's role does not allow the call (e.g. os:reader applying)."""


class NodeUnreachableError(TalosAPIError):
    """No connection could be made to the endpoint or the node behind it."""


class DeadlineExceededError(TalosAPIError):
    """The call or its retries ran past the configured deadline."""


class ApplyInProgressError(TalosAPIError):
    """The node refused an apply because another one is in progress (FailedPrecondition)."""


class NotFoundError(TalosAPIError):
    """The requested resource does not exist on the node."""


class UnsupportedVersionError(TalosAPIError):
    """The node runs a Talos version without what the rotation needs."""
