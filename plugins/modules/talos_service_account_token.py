#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: talos_service_account_token
short_description: Issue a service-account token into a private file, or prove every kube-apiserver accepts or refuses it
version_added: 0.1.0
description:
  - With O(state=issued), asks the Kubernetes API for a token of service account O(namespace)/O(service_account)
    (TokenRequest, as C(kubectl create token) does) and writes it to O(path) (0600, vault-encrypted under O(encrypt_dir)).
    An existing file is kept unless O(force=true), so a token issued before a service-account key rotation survives reruns
    and can prove at the end that the old key's tokens are refused.
  - With O(state=authenticated), every API server of O(api_servers) must authenticate the token in O(path) (an answer or 403,
    never 401); with O(state=refused), every one must answer 401 Unauthorized. Retried until O(deadline). A TLS failure, a
    timeout or another status proves nothing about the token and fails the check.
  - With O(state=legacy_report), lists the legacy token Secrets (type C(kubernetes.io/service-account-token)) and which of
    them a key of O(key_fingerprints) signed (read from each token's C(kid)); warns about those - the kubelet never refreshes
    them, so they stop working when that key is removed. Reads only; O(path) is not used.
  - The token is never returned or logged - only its signing key id (C(kid)), algorithm, subject and expiry.
  - TLS verification always stays on.
extends_documentation_fragment:
  - talosops.pki._encryption
  - talosops.pki._kubernetes
  - talosops.pki._attributes
attributes:
  check_mode:
    description: With O(state=issued) nothing is requested or written (C(changed) says whether a token would be); the
      checks of the other states only read and run the same.
    support: full
  diff_mode:
    description: No diff - the file holds a credential.
    support: none
options:
  path:
    description:
      - File holding the token (written with O(state=issued), read with O(state=authenticated) and O(state=refused)).
      - Required unless O(state=legacy_report).
    type: path
  state:
    description:
      - V(issued) - a token is in O(path). V(authenticated) - every API server authenticates it. V(refused) - every API
        server refuses it (401). V(legacy_report) - report the legacy token Secrets.
    type: str
    default: issued
    choices: [issued, authenticated, refused, legacy_report]
  key_fingerprints:
    description:
      - With O(state=legacy_report), fingerprints (hex SHA-256 of the public key's DER, as talos_ca_generate and
        talos_cluster_info give them) of the keys whose tokens to flag.
    type: list
    elements: str
    default: []
  api_servers:
    description:
      - API servers, as C(https://host:port) or C(host) (port 6443). The kubeconfig's server when not set; with
        O(state=issued) the first one is asked.
    type: list
    elements: str
  namespace:
    description:
      - Namespace of the service account.
    type: str
    default: default
  service_account:
    description:
      - Name of the service account (one that exists - every namespace has C(default)).
    type: str
    default: default
  expiration_seconds:
    description:
      - Lifetime asked for the token, at least 600 (kube-apiserver's minimum).
    type: int
    default: 86400
  force:
    description:
      - Issue a new token even when O(path) exists.
    type: bool
    default: false
  deadline:
    description:
      - Seconds each API server has to prove the expectation, retries included.
    type: float
    default: 180.0
  retry_interval:
    description:
      - Seconds between two tries.
    type: float
    default: 1.0
seealso:
  - module: talosops.pki.talos_kubernetes_verify
  - module: talosops.pki.talos_machine_patch
author:
  - talosops.pki contributors (@talosops)
"""

EXAMPLES = r"""
- name: Keep a token signed by the current service-account key (issued once)
  talosops.pki.talos_service_account_token:
    kubeconfig: ~/.talos/rotation/kubernetes/kubeconfig
    path: ~/.talos/rotation/service_account/previous-token
  run_once: true

- name: Every API server refuses it once the old key is removed
  talosops.pki.talos_service_account_token:
    kubeconfig: ~/.talos/rotation/kubernetes/kubeconfig
    path: ~/.talos/rotation/service_account/previous-token
    api_servers: [10.5.0.2, 10.5.0.3, 10.5.0.4]
    state: refused
  run_once: true
"""

RETURN = r"""
path:
  description: The token file.
  returned: unless O(state=legacy_report)
  type: str
state:
  description: The state asked for.
  returned: always
  type: str
key_id:
  description: The C(kid) of the token's header - base64url SHA-256 of the signing public key's DER.
  returned: when a token exists (not in check mode before it is issued)
  type: str
algorithm:
  description: The token's signature algorithm (V(RS256) for an RSA key, V(ES256) for ECDSA P-256).
  returned: when a token exists
  type: str
subject:
  description: The token's subject (C(system:serviceaccount:<namespace>:<name>)).
  returned: when a token exists
  type: str
expires:
  description: When the token expires (UTC, ISO 8601).
  returned: when a token exists
  type: str
issued:
  description: When the token was issued (UTC, ISO 8601).
  returned: when a token exists
  type: str
age_seconds:
  description: Seconds since the token was issued - for a token issued right after a key swap, how long the swap is past.
  returned: when a token exists
  type: int
api_servers:
  description: Per API server URL - C(ok), C(detail) and C(seconds) it took.
  returned: with O(state=authenticated) or O(state=refused)
  type: dict
legacy_secrets:
  description: With O(state=legacy_report), each legacy token Secret - C(namespace), C(name), C(service_account),
    C(key_fingerprint) (of the key that signed its token) and C(signed_by_listed_key). Never the token.
  returned: with O(state=legacy_report)
  type: list
  elements: dict
signed_by_listed_key:
  description: How many of them a key of O(key_fingerprints) signed.
  returned: with O(state=legacy_report)
  type: int
failed_api_servers:
  description: API servers that did not prove the expectation, sorted.
  returned: with O(state=authenticated) or O(state=refused)
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.talosops.pki.plugins.module_utils._ansible import run_module
from ansible_collections.talosops.pki.plugins.module_utils._backends import service_account_token


def main():
    run_module(service_account_token, AnsibleModule)


if __name__ == "__main__":
    main()
