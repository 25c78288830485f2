#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: talos_talosconfig
short_description: Issue talosconfig credentials for a user with Talos roles, offline from the Talos API CA
version_added: 0.1.0
description:
  - Issues a talosconfig context for a user, as C(talosctl config new --roles) does, but on the controller - the client
    certificate is signed with the Talos API CA key from a rotation directory (O(ca_dir)) or a C(talosctl gen secrets)
    bundle (O(secrets_file)). No node is contacted.
  - The certificate is made the way Talos makes talosconfig certificates - one Subject Organization per role (that is how
    Talos reads roles), ExtendedKeyUsage exactly ClientAuth, a key of the CA's type - plus the user name as its common name
    when O(name) is given (Talos ignores the common name; it names the holder in audits). The context's CA is the CA alone,
    or with O(trust_previous_ca) the CA and the CA the rotation replaces.
  - With O(reissue=true), every context of an existing file that belongs to this cluster (its CA or its certificate's issuer
    is the CA, or the rotation's previous CA) gets a new certificate from the CA keeping its roles (read from its
    certificate), user name, endpoints and nodes - what every talosconfig holder needs after a CA rotation. Contexts of
    other clusters keep their bytes.
  - Idempotent - a context is kept when its CA is the CA, its certificate was issued by the CA with the same roles (and name),
    its endpoints and nodes are as asked, and less than 30 days (or a fifth of O(validity_hours)) of it are not yet left.
    When only endpoints, nodes or the CA bundle differ, the certificate is kept and only those fields are rewritten.
  - The file is written atomically with mode 0600 (a missing parent folder is created 0700); other contexts keep their bytes.
    A change made with the CA of a rotation directory (O(ca_dir)) is recorded in that rotation's audit log.
  - Refuses, before writing anything, a role Talos does not give users, a lifetime that would outlive the CA, a CA without
    its private key, and on reissue a certificate holding a role Talos does not know.
extends_documentation_fragment:
  - talosops.pki._encryption
  - talosops.pki._attributes
attributes:
  check_mode:
    description: Nothing is written; the result says which contexts would be issued, reissued, updated or kept, with the
      roles and expiry the new certificates would have.
    support: full
  diff_mode:
    description: Before and after of each context - endpoints, nodes, CA fingerprints, client certificate fingerprint, subject,
      roles and expiry; never keys.
    support: full
options:
  path:
    description:
      - The talosconfig file to write (O(reissue=false)) or to reissue in place (O(reissue=true), it must exist).
    type: path
    required: true
  ca_dir:
    description:
      - Rotation directory of the Talos API CA (C(<rotate_ca_dir>/talos)); its new CA signs the certificates. Its previous
        CA also marks contexts as this cluster's for O(reissue).
      - Exactly one of O(ca_dir) and O(secrets_file).
    type: path
  secrets_file:
    description:
      - A C(talosctl gen secrets) bundle; its C(certs.os) certificate and key sign the certificates.
      - Exactly one of O(ca_dir) and O(secrets_file).
    type: path
  reissue:
    description:
      - V(true) - reissue the contexts of this cluster in O(path) (or only O(context)), keeping each one's roles, user name,
        endpoints and nodes. V(false) - issue or keep the single context O(context) for O(name) with O(roles).
    type: bool
    default: false
  context:
    description:
      - Name of the context to write. Defaults to O(name).
      - With O(reissue=true), reissue only this context.
    type: str
  name:
    description:
      - User name, written as the client certificate's common name; also the context name when O(context) is not given.
      - Not with O(reissue=true), which keeps each certificate's name.
    type: str
  roles:
    description:
      - Talos roles of the user, each one Subject Organization of the certificate. V(os:admin) when not given.
      - V(os:impersonator) is refused - apid believes any role its holder claims.
      - Not with O(reissue=true), which keeps each certificate's roles.
    type: list
    elements: str
    choices: [os:admin, os:operator, os:reader, os:etcd:backup]
  validity_hours:
    description:
      - Lifetime of the client certificates issued, in hours (Talos uses 8760, one year). Must end before the CA expires.
    type: int
    default: 8760
  endpoints:
    description:
      - Control-plane endpoints of the context. Required to create a context; an existing context keeps its own when not given.
    type: list
    elements: str
  nodes:
    description:
      - Default target nodes of the context (C(talosctl -n)). An existing context keeps its own when not given.
    type: list
    elements: str
  make_current:
    description:
      - Make the context the file's current context. Ignored with O(reissue=true) (the current context stays).
    type: bool
    default: true
  backup:
    description:
      - Before changing an existing file, keep a copy as C(<path>.bak-<UTC time>) (mode 0600).
    type: bool
    default: false
  trust_previous_ca:
    description:
      - Trust servers signed by the CA of O(ca_dir) or by the CA it replaces (the context's CA bundle holds both, the new CA
        first) - the rotation's admin talosconfig, which works on every node from the end of the accept phase to the end
        of the rotation, whichever of the two CAs a node serves with.
      - Only with O(ca_dir).
    type: bool
    default: false
seealso:
  - module: talosops.pki.talos_ca_generate
  - module: talosops.pki.talos_kubeconfig
  - module: talosops.pki.talos_verify
  - name: talosctl config new
    description: The upstream command this module mirrors, offline.
    link: https://www.talos.dev/latest/reference/cli/#talosctl-config-new
author:
  - talosops.pki contributors (@talosops)
"""

EXAMPLES = r"""
- name: A read-only talosconfig for the monitoring team, from the Talos API CA of the rotation folder
  talosops.pki.talos_talosconfig:
    path: /srv/automation/handout/monitoring/talosconfig
    # Or secrets_file: ~/clusters/prod/secrets.yaml (certs.os), as long as it holds the CA the cluster trusts now.
    ca_dir: /var/lib/talos-rotation/talos
    name: monitoring
    roles: [os:reader]
    validity_hours: 720
    endpoints: [10.5.0.2, 10.5.0.3, 10.5.0.4]
  run_once: true

- name: After a CA rotation, reissue a user's talosconfig in place, keeping its roles, endpoints and nodes
  talosops.pki.talos_talosconfig:
    path: ~/.talos/prod-config
    ca_dir: /var/lib/talos-rotation/talos
    reissue: true
    backup: true
  run_once: true

- name: Mid-rotation admin credentials - a client certificate from the new CA, trusting the old and the new server CA
  talosops.pki.talos_talosconfig:
    path: /var/lib/talos-rotation/talos/talosconfig
    ca_dir: /var/lib/talos-rotation/talos
    context: prod
    endpoints: [10.5.0.2, 10.5.0.3, 10.5.0.4]
    trust_previous_ca: true
  run_once: true
"""

RETURN = r"""
path:
  description: The talosconfig file.
  returned: always
  type: str
  sample: /srv/automation/handout/monitoring/talosconfig
ca_fingerprint:
  description: SHA-256 fingerprint of the CA that signs the certificates.
  returned: always
  type: str
ca_not_after:
  description: When that CA expires (UTC).
  returned: always
  type: str
  sample: "2036-03-01T10:00:00Z"
contexts:
  description:
    - One entry per context handled - C(context), C(action) (V(issued), V(reissued), V(updated) - certificate kept, other
      fields rewritten - or V(kept)), C(reason), C(endpoints), C(nodes), C(ca_fingerprints) and C(client_certificate)
      (C(fingerprint_sha256), C(subject), C(roles), C(not_after), C(issued_by_ca)). In check mode a certificate not yet made
      has no fingerprint or subject.
  returned: always
  type: list
  elements: dict
summary:
  description: One line per context - file, context, what was (or would be) done, roles, expiry.
  returned: always
  type: list
  elements: str
  sample: ["/home/alice/.talos/config context prod: reissued, roles os:reader, expires 2027-03-01T10:00:00Z"]
backup:
  description: Path of the copy of the previous file, when O(backup) made one.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.talosops.pki.plugins.module_utils._ansible import run_module
from ansible_collections.talosops.pki.plugins.module_utils._backends import talosconfig


def main():
    run_module(talosconfig, AnsibleModule)


if __name__ == "__main__":
    main()
