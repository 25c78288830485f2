#!/usr/bin/env bash
# ansible-test sanity, offline-capable, against a copy of the checkout at a real
# ansible_collections/talosops/pki path (see tools/ci/sanity_tree.py).
# Expects the project's virtual environment first on PATH (the Makefile does that).
# Extra arguments go to ansible-test, e.g. `make sanity SANITY_ARGS="--test pylint"`.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python_version=$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')

standin=$(python "$here/get_pip_standin.py")
echo "get-pip for ansible-test: $standin"
tree=$(python "$here/sanity_tree.py")
echo "sanity tree: $tree"
cd "$tree"
exec ansible-test sanity --venv --python "$python_version" "$@"
