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
seealso:
  - module: talosops.pki.talos_kubernetes_verify
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
  returned: always
  type: str
  sample: admin@prod
server:
  description: The Kubernetes API server URL of that context.
  returned: always
  type: str
  sample: https://10.5.0.2:6443
ca_fingerprints:
  description: SHA-256 fingerprints of the CA certificates in the context's CA data (every CA the cluster accepts).
  returned: always
  type: list
  elements: str
client_certificate:
  description: Public facts of the context's client certificate - C(fingerprint_sha256), C(subject), C(organization), C(issuer),
    C(not_after), and C(issued_by_current_ca).
  returned: always
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
