# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.

from __future__ import annotations


class ModuleDocFragment:
    """Encryption at rest of what a task writes into the rotation directory, with the play's vault secret."""

    DOCUMENTATION = r"""
options:
  encrypt_dir:
    description:
      - Folder (the rotation directory) whose files this task writes encrypted with ansible-vault, using the vault secret
        of the play (C(--vault-id), C(--vault-password-file), in AWX a Vault credential). Files anywhere else are written
        in clear.
      - Vault-encrypted files are read in clear whenever a vault secret is loaded, wherever they are, so a rotation started
        encrypted resumes transparently; without the secret, reading one fails and says so.
      - Each line of the audit log is encrypted on its own, stored as a one-line JSON object with the vault text under C(vault).
    type: path
  encrypt:
    description:
      - When O(encrypt_dir) is encrypted. V(auto) - whenever a vault secret is loaded. V(always) - refuse to run without one
        (nothing is ever written in clear). V(never) - write in clear.
      - Needs the action plugin (the default when the task uses the module's name); a module process has no vault secret.
    type: str
    choices: [auto, always, never]
    default: auto
"""
