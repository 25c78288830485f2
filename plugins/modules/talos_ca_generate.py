#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: talos_ca_generate
short_description: Create a rotation's new CA on disk, and client credentials from it
version_added: 0.1.0
description:
  - Creates a new CA exactly as Talos generates its own (Talos API CA - Ed25519, O=talos; Kubernetes API CA - ECDSA P-256,
    O=kubernetes; ten years; CA key usage and both server and client EKUs) and persists it, with the certificate of the
    CA it replaces, into the rotation directory O(path) (0700, files 0600) before anything else uses it.
  - The new CA also carries a rotation marker in a non-critical comment extension (nsComment; rotation id, the CA it
    replaces, start time and controller host name; no secret), which Talos and Kubernetes ignore. It shows the rotation in progress on the cluster
    itself, so that a run from another rotation directory or controller is refused before it changes any node.
  - Idempotent - an existing, valid rotation in O(path) is reused and reported unchanged, so an interrupted rotation
    resumes with the same new CA. Starting a new rotation means archiving the old directory first.
  - Can issue a talosconfig context with a client certificate from the new CA (O(talosconfig)), kept while it is valid,
    from this CA and has the asked roles, and update the CA in a C(talosctl gen secrets) bundle (O(secrets_file)), keeping a backup.
  - Returns certificate facts and paths, never the key unless O(return_key=true).
  - Appends what it does (CA generated, talosconfig written, secrets bundle updated, rotation archived) to C(audit.jsonl) in
    O(path), a JSON line each with the time and fingerprints, never key material.
extends_documentation_fragment:
  - talosops.pki._encryption
  - talosops.pki._attributes
attributes:
  check_mode:
    description: Nothing in O(path), O(talosconfig) or O(secrets_file) is written. When no rotation exists yet, a throwaway CA
      no node will ever trust is made in a private temporary directory and its path returned, so later dry runs have a CA to show.
    support: full
  diff_mode:
    description: No diff; the result says what was or would be written.
    support: none
options:
  path:
    description:
      - Rotation directory of this CA (for example C(/var/lib/talos-rotation/talos)).
    type: path
    required: true
  kind:
    description:
      - The CA to generate.
      - V(aggregator) is the Kubernetes aggregator (front-proxy) CA (CN front-proxy, as Talos makes it); its secrets file
        entry is C(certs.k8saggregator).
      - V(service_account) makes a service-account signing key instead (no certificate; the rotation
        directory holds C(sa.key), C(sa.pub) and C(previous-sa.pub)); O(validity_hours) does not apply to it, and
        O(talosconfig), O(previous_talosconfig) and O(return_key) are refused.
    type: str
    default: talos
    choices: [talos, kubernetes, aggregator, service_account]
  algorithm:
    description:
      - Key algorithm. Defaults to what Talos uses for O(kind) - V(ed25519) for talos, V(ecdsa-p256) for kubernetes,
        V(rsa-4096) for service_account (which takes RSA or V(ecdsa-p256) only - tokens are signed RS256 or ES256).
    type: str
    choices: [ed25519, ecdsa-p256, rsa-2048, rsa-3072, rsa-4096]
  validity_hours:
    description:
      - Validity of the new CA in hours, at most 876000 (100 years). It must be at least the lifetime of the client
        certificates the CA signs - O(talosconfig.validity_hours) (default 8760, one year) for O(kind=talos), 8760 (the
        admin kubeconfig Talos issues) for O(kind=kubernetes) - so that no client certificate outlives its CA. Below a year
        the task warns, since the cluster then needs another rotation within the year.
    type: int
    default: 87600
  previous_ca:
    description:
      - PEM certificate of the CA being replaced (the cluster's current issuing CA). Needed to create a rotation.
      - For O(kind=service_account), the public key of the current signing key - PEM, or the hex of its DER as
        talos_cluster_info returns it in C(service_account.public_key); only its public part is kept.
    type: str
  create:
    description:
      - Create the rotation when O(path) holds none. With V(false), a missing rotation is an error - for steps that must
        never make a CA, such as writing the final credentials.
    type: bool
    default: true
  start_new:
    description:
      - When O(path) holds a rotation that has completed (recorded by O(complete), and its new CA is O(previous_ca), the
        cluster's issuing CA now), move it to C(<path>.archived-<UTC time>) and start a new rotation.
      - A rotation still in progress is never archived - it is resumed with its own CA, with a warning, so that a rerun of
        the same command after an interruption finishes it. Refused when the completed rotation's CA no longer issues on the
        cluster (another rotation changed it since).
    type: bool
    default: false
  complete:
    description:
      - Record in C(rotation.json) that the rotation in O(path) has completed - the caller has proven every node on the new CA
        alone and written the new credentials. Only a completed rotation is archived by O(start_new). Use with O(create=false).
    type: bool
    default: false
  talosconfig:
    description:
      - Write a talosconfig context with a client certificate issued by the new CA (O(kind=talos)).
    type: dict
    suboptions:
      path:
        description: Talosconfig file to create or update (0600); other contexts in it are kept.
        type: path
        required: true
      context:
        description: Name of the context, made the current context.
        type: str
        required: true
      endpoints:
        description: Endpoints of the context. Required to create a context; when not set, an existing context keeps its own.
        type: list
        elements: str
      nodes:
        description: Default nodes of the context. When not set, an existing context keeps its own.
        type: list
        elements: str
      roles:
        description: Roles of the client certificate (its Organization values).
        type: list
        elements: str
        default: ['os:admin']
      trust_previous_ca:
        description: Trust the previous CA as well as the new one for server certificates - what a client needs while nodes
          change from one to the other.
        type: bool
        default: false
      validity_hours:
        description: Validity of the client certificate in hours.
        type: int
        default: 8760
  secrets_file:
    description:
      - A C(talosctl gen secrets) bundle whose CA of O(kind) (C(certs.os) or C(certs.k8s); C(certs.k8sserviceaccount.key)
        for O(kind=service_account)) is set to the new CA. The previous
        file is kept as C(<secrets_file>.bak-<UTC time>). Refused when the bundle holds a CA of another cluster.
    type: path
  previous_talosconfig:
    description:
      - Copies the talosconfig in use before the rotation (O(previous_talosconfig.src)) to O(previous_talosconfig.dest), 0600
        (encrypted when under O(encrypt_dir)), once - an existing copy is kept, whatever the source has become since. The
        rotation proves those old credentials refused at the end.
    type: dict
    suboptions:
      src:
        description: The talosconfig in use.
        type: path
        required: true
      dest:
        description: Where the copy goes, usually in the rotation directory.
        type: path
        required: true
  return_key:
    description:
      - Return the new CA's private key as RV(ca_key). The whole task result is then hidden from output and logs.
    type: bool
    default: false
  previous_ca_source:
    description:
      - Where to read the key of the CA being replaced - the root secrets of a control plane reached through this
        talosconfig. When given, the key is kept in O(path) as C(previous-ca.key) (0600, vault-encrypted like the new CA's
        key) together with the new CA, before any node sees it, so that a rollback can make the previous CA issue again.
      - For a rotation that was created without it, the key is added on a later run while the cluster still issues with
        the previous CA. Nothing is read in check mode.
    type: dict
    suboptions:
      talosconfig:
        description: The talosconfig whose credentials the endpoints trust now.
        type: path
        required: true
      context:
        description: Its context; the current one when omitted.
        type: str
      endpoints:
        description: Control-plane endpoints; the context's when omitted.
        type: list
        elements: str
  rolled_back:
    description:
      - Mark the rotation in O(path) as rolled back - append C(rotation_rolled_back) to its audit log and move the folder to
        C(<path>.rolled-back-<UTC time>), where it is kept and never resumed. Only once every node is back on the previous CA
        alone (the M(talosops.pki.talos_machine_patch) rollback phases and a verification). Fails when O(path) holds no
        rotation. In check mode the new name is only reported.
    type: bool
    default: false
seealso:
  - module: talosops.pki.talos_machine_patch
author:
  - talosops.pki contributors (@talosops)
"""

EXAMPLES = r"""
# The admin talosconfig from it, trusting old and new server CAs: talos_talosconfig with trust_previous_ca (its last example).
- name: Create (or reuse) the new Talos API CA
  talosops.pki.talos_ca_generate:
    path: /var/lib/talos-rotation/talos
    kind: talos
    previous_ca: "{{ cluster.issuing_ca.talos.crt }}"
    # A backup of the credentials in use, which the end of the rotation proves refused.
    previous_talosconfig:
      src: ~/.talos/config
      dest: /var/lib/talos-rotation/talos/previous-talosconfig
  register: new_ca
  run_once: true

- name: After the rotation, write the user's talosconfig and secrets bundle
  talosops.pki.talos_ca_generate:
    path: /var/lib/talos-rotation/talos
    create: false
    talosconfig:
      path: ~/.talos/config
      context: prod
      endpoints: [10.5.0.2, 10.5.0.3, 10.5.0.4]
    secrets_file: ~/clusters/prod/secrets.yaml
  run_once: true

- name: After a rollback, keep the rotation folder as <path>.rolled-back-<time>
  talosops.pki.talos_ca_generate:
    path: /var/lib/talos-rotation/talos
    create: false
    rolled_back: true
"""

RETURN = r"""
path:
  description: The rotation directory used (a temporary one for a throwaway CA in check mode).
  returned: always
  type: str
archived:
  description: Where a completed rotation was moved by O(start_new), or null.
  returned: always
  type: str
throwaway:
  description: Whether the CA is a check-mode throwaway in a temporary directory.
  returned: always
  type: bool
ca_cert_path:
  description: Path of the new CA certificate.
  returned: unless O(kind=service_account)
  type: str
ca_key_path:
  description: Path of the new CA key (0600).
  returned: unless O(kind=service_account)
  type: str
previous_ca_cert_path:
  description: Path of the certificate of the CA being replaced.
  returned: unless O(kind=service_account)
  type: str
previous_ca_key_kept:
  description: Whether the key of the CA being replaced is kept in O(path) (C(previous-ca.key)), as a rollback needs.
  returned: unless O(kind=service_account)
  type: bool
rolled_back_to:
  description: Where the rotation folder was (or, in check mode, would be) moved by O(rolled_back=true).
  returned: when O(rolled_back=true)
  type: str
ca_fingerprint:
  description: SHA-256 fingerprint of the new CA.
  returned: always
  type: str
previous_ca_fingerprint:
  description: SHA-256 fingerprint of the CA being replaced.
  returned: always
  type: str
rotation_id:
  description: The rotation's id, also in the new CA's rotation marker extension (which the nodes carry from the accept
    phase on, so that a run from another rotation directory or controller sees this rotation in progress), or null for a
    rotation made before markers existed.
  returned: always
  type: str
created:
  description: When the rotation was created (UTC, ISO 8601).
  returned: always
  type: str
audit_log_path:
  description: The rotation's audit log (JSON lines, no key material).
  returned: always
  type: str
  sample: /var/lib/talos-rotation/talos/audit.jsonl
completed:
  description: When the rotation was recorded as completed (UTC, ISO 8601), or null while it is in progress.
  returned: always
  type: str
completion:
  description: With O(complete) - C(path) of the rotation and whether it was C(changed) (recorded as completed now).
  returned: when O(complete=true)
  type: dict
ca:
  description: Facts of the new CA - subject, issuer, fingerprint_sha256, not_before, not_after, is_ca, key_type, key usages.
  returned: unless O(kind=service_account)
  type: dict
previous_ca:
  description: Facts of the CA being replaced, as for RV(ca).
  returned: unless O(kind=service_account)
  type: dict
key_path:
  description: Path of the new service-account signing key (0600).
  returned: when O(kind=service_account)
  type: str
public_key_path:
  description: Path of the new service-account public key.
  returned: when O(kind=service_account)
  type: str
previous_public_key_path:
  description: Path of the public key being replaced.
  returned: when O(kind=service_account)
  type: str
algorithm:
  description: Key type of the new service-account key (for example V(rsa-4096)).
  returned: when O(kind=service_account)
  type: str
talosconfig:
  description: The talosconfig written or kept - C(path), C(context), C(changed).
  returned: when O(talosconfig) is set
  type: dict
previous_talosconfig:
  description: With O(previous_talosconfig) - C(path) of the copy and whether it was C(changed) (written now).
  returned: when O(previous_talosconfig) is given
  type: dict
secrets_file:
  description: The secrets bundle updated - C(path), C(changed), C(backup) (path of the backup, or null).
  returned: when O(secrets_file) is set
  type: dict
ca_key:
  description: The new CA's private key (PEM).
  returned: when O(return_key=true)
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.talosops.pki.plugins.module_utils._ansible import run_module
from ansible_collections.talosops.pki.plugins.module_utils._backends import ca_generate


def main():
    run_module(ca_generate, AnsibleModule)


if __name__ == "__main__":
    main()
