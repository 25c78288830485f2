#!/usr/bin/env bash
# antsibull-docs lint-collection-docs --plugin-docs: the plugin and module documentation as
# docs.ansible.com renders it (markup, references to options and other plugins, seealso, ...).
# antsibull-docs needs the collection at an ansible_collections/<namespace>/<name> path: use the
# symlinked tree tests/collection_root.py keeps for the tests, the demo and ansible-lint.
# Expects the project's virtual environment first on PATH (the Makefile does that): antsibull-docs
# runs ansible-doc from it. Extra arguments go to antsibull-docs.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
collections=$(python -c 'import sys; sys.path.insert(0, "tests"); from collection_root import collections_root; print(collections_root())')
cd "$collections/ansible_collections/talosops/pki"
exec antsibull-docs lint-collection-docs --plugin-docs "$@" .
