#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: talos_kubeconfig
short_description: Fetch the admin kubeconfig of a Talos cluster through the Talos API and write it
version_added: 0.1.0
description:
  - Asks a control-plane node for an admin kubeconfig (the Talos API C(Kubeconfig) call, as C(talosctl kubeconfig) does)
    and writes it to O(path) atomically with mode 0600.
  - Talos issues a new client certificate on every call, so the file is kept (C(changed=false)) when it already fits the
    cluster's current Kubernetes PKI - same server, CA data holding the same certificates, and a client certificate issued
    by the node's current issuing Kubernetes CA, valid for 30 more days. During a CA rotation the file is therefore
    replaced exactly when the swap or the removal changes what the cluster trusts.
  - For users other than the admin (O(user), O(groups)), the client certificate is issued on the controller from the
    Kubernetes API CA of a rotation directory (O(ca_dir)) or a secrets.yaml (O(secrets_file)) - CN the user name, one O per
    group, as kube-apiserver reads them, ExtendedKeyUsage ClientAuth, O(validity_hours) long - while the server and CA data
    still come from the node. The user and context entries are called C(<user>@<cluster>) (or O(name)); the file is kept
    when the certificate was issued by that CA for the same user and groups, the server and CA data are the cluster's, and
    less than 30 days (or a fifth of O(validity_hours)) of it are not yet left.
  - With O(reissue=true), every context of this cluster in the existing file O(path) (its CA data or its certificate's
    issuer is the cluster's CA, or the rotation's previous CA) gets a certificate from that CA with the same user name and
    groups, and the CA data the cluster trusts now; its server and other clusters' entries stay.
  - Refuses, before writing, a lifetime that would outlive the CA, a CA the cluster does not trust, a CA without its key.
  - With O(merge=true), only this cluster's entries (the cluster, user and context named as Talos names them) are replaced
    in place; other clusters' entries and the file's current context stay. Same-named entries of another cluster (another
    server and CA) are refused rather than overwritten; give O(name) to write under another name.
extends_documentation_fragment:
  - talosops.pki._encryption
  - talosops.pki._auth
  - talosops.pki._auth.action_group
  - talosops.pki._attributes
attributes:
  check_mode:
    description: The kubeconfig is fetched and compared (the node only generates it); nothing is written.
    support: full
  diff_mode:
    description: Before and after of the context's server, CA fingerprints and client certificate (subject, fingerprint, expiry,
      whether the current issuing CA signed it); never keys.
    support: full
options:
  path:
    description:
      - Kubeconfig file to write. Found as C(kubectl) does when not set - the first file of E(KUBECONFIG), else
        C(~/.kube/config). A missing parent folder is created with mode 0700.
    type: path
  node:
    description:
      - Control-plane node to ask (through the endpoints with the C(node) header). The endpoint itself when not set.
      - Workers cannot generate a kubeconfig.
    type: str
  merge:
    description:
      - V(true) - replace this cluster's entries in the existing file and keep the others. V(false) - the file holds only
        the fetched kubeconfig.
    type: bool
    default: true
  name:
    description:
      - Name for the cluster, user and context entries written, instead of the names Talos gives (C(admin@<cluster>) and
        the cluster name). Use it when the file already holds another cluster under those names.
    type: str
  force:
    description:
      - V(false) keeps an existing file as it is, whatever it holds; used to pin the kubeconfig from before a rotation so
        that its refusal can be proven at the end.
    type: bool
    default: true
  backup:
    description:
      - Before replacing an existing file, keep a copy as C(<path>.bak-<UTC time>) (mode 0600).
    type: bool
    default: false
  user:
    description:
      - Issue the kubeconfig for this user (the client certificate's CN) from the CA of O(ca_dir) or O(secrets_file) instead
        of asking the node for an admin one.
    type: str
  groups:
    description:
      - Kubernetes groups of O(user), each one O of the client certificate (C(system:masters) is what the admin kubeconfig has).
    type: list
    elements: str
  validity_hours:
    description:
      - Lifetime of a client certificate issued for O(user) or on O(reissue), in hours. Must end before the CA expires.
    type: int
    default: 8760
  reissue:
    description:
      - Reissue the client certificates of every context of this cluster in the existing O(path), keeping each user name and
        groups; not with O(user) or O(groups).
    type: bool
    default: false
  ca_dir:
    description:
      - Rotation directory of the Kubernetes API CA (C(<rotate_ca_dir>/kubernetes)) whose new CA signs certificates for
        O(user) or O(reissue). Exactly one of O(ca_dir) and O(secrets_file) for those.
    type: path
  secrets_file:
    description:
      - A C(talosctl gen secrets) bundle whose C(certs.k8s) signs certificates for O(user) or O(reissue).
    type: path
seealso:
  - module: talosops.pki.talos_kubernetes_verify
  - module: talosops.pki.talos_talosconfig
  - name: talosctl kubeconfig
    description: The upstream command this module mirrors.
    link: https://www.talos.dev/latest/reference/cli/#talosctl-kubeconfig
author:
  - talosops.pki contributors (@talosops)
"""

EXAMPLES = r"""
- name: Write the admin kubeconfig into the user's kubeconfig (merged with the other clusters there)
  talosops.pki.talos_kubeconfig:
    talosconfig: ~/.talos/config
    node: 10.5.0.2
    backup: true
  run_once: true

- name: A kubeconfig for a developer, issued from the Kubernetes API CA the last rotation put in place
  talosops.pki.talos_kubeconfig:
    talosconfig: ~/.talos/config
    node: 10.5.0.2
    path: /srv/automation/handout/alice/kubeconfig
    merge: false
    user: alice
    groups: [developers]
    validity_hours: 720
    # Or secrets_file: ~/clusters/prod/secrets.yaml (certs.k8s), as long as it holds the CA the cluster trusts now.
    ca_dir: ~/.talos/rotation/kubernetes
  run_once: true

- name: A separate kubeconfig for automation
  talosops.pki.talos_kubeconfig:
    talosconfig: ~/.talos/config
    path: /srv/automation/kubeconfig
    merge: false
  run_once: true
"""

RETURN = r"""
path:
  description: The kubeconfig file.
  returned: always
  type: str
  sample: /home/admin/.kube/config
context:
  description: The cluster's context in the file.
  returned: without O(user) and O(reissue)
  type: str
  sample: admin@prod
server:
  description: The Kubernetes API server URL of that context.
  returned: without O(user) and O(reissue)
  type: str
  sample: https://10.5.0.2:6443
ca_fingerprints:
  description: SHA-256 fingerprints of the CA certificates in the context's CA data (every CA the cluster accepts).
  returned: without O(user) and O(reissue)
  type: list
  elements: str
client_certificate:
  description: Public facts of the context's client certificate - C(fingerprint_sha256), C(subject), C(organization), C(issuer),
    C(not_after), and C(issued_by_current_ca).
  returned: without O(user) and O(reissue)
  type: dict
kept:
  description: Why the file was left as it was.
  returned: when nothing was written
  type: str
replaced_because:
  description: Why the file was (or, in check mode, would be) written.
  returned: changed
  type: str
  sample: the CA data differs from the CAs the cluster trusts now
contexts:
  description:
    - With O(user) or O(reissue), one entry per context handled - C(context), C(action) (V(issued), V(reissued) or V(kept)),
      C(reason), C(server), C(ca_fingerprints) and C(client_certificate) (C(fingerprint_sha256), C(subject), C(common_name),
      C(organization), C(issuer), C(not_after), C(issued_by_ca)).
  returned: with O(user) or O(reissue)
  type: list
  elements: dict
summary:
  description: With O(user) or O(reissue), one line per context - file, context, what was (or would be) done, user, groups, expiry.
  returned: with O(user) or O(reissue)
  type: list
  elements: str
backup:
  description: Path of the backup of the previous file, when O(backup) made one.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.talosops.pki.plugins.module_utils._ansible import run_module
from ansible_collections.talosops.pki.plugins.module_utils._backends import kubeconfig


def main():
    run_module(kubeconfig, AnsibleModule)


if __name__ == "__main__":
    main()
