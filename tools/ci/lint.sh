#!/usr/bin/env bash
# ansible-lint (configuration in .ansible-lint: production profile, offline).
# Offline, ansible-lint does not install the collection it lints, so the collection's own
# FQCNs (talosops.pki.rotate_ca, talosops.pki.talos_verify...) would not resolve: point
# ANSIBLE_COLLECTIONS_PATH at the symlinked ansible_collections tree tests/collection_root.py
# keeps for the tests and the demo.
# Expects the project's virtual environment first on PATH (the Makefile does that).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
collections=$(python -c 'import sys; sys.path.insert(0, "tests"); from collection_root import collections_root; print(collections_root())')
# The AWX-as-code playbook resolves every awx.awx module and its arguments' YAML (awx.awx comes with the `ansible` package).
ANSIBLE_COLLECTIONS_PATH="$collections${ANSIBLE_COLLECTIONS_PATH:+:$ANSIBLE_COLLECTIONS_PATH}" \
    ansible-playbook --syntax-check -i localhost, docs/awx/fleet-workflow.yml playbooks/cert_report.yml
ANSIBLE_COLLECTIONS_PATH="$collections${ANSIBLE_COLLECTIONS_PATH:+:$ANSIBLE_COLLECTIONS_PATH}" exec ansible-lint "$@"
