#!/usr/bin/env bash
# Create the project's virtual environment from requirements-dev.txt (called by `make venv`).
#   tools/ci/make_venv.sh PYTHON VENV_DIR STAMP_FILE
# Recreates VENV_DIR from scratch, so packages dropped from the requirements go too, and
# touches STAMP_FILE (named after the requirements' hash) only when everything installed.
set -euo pipefail

python=$1 venv=$2 stamp=$3

if ! command -v "$python" >/dev/null 2>&1; then
    echo "$python not found: install Python 3.11 or newer, or run make PYTHON=/path/to/python3 ..." >&2
    exit 1
fi
if [ "$("$python" -c 'import sys; print(sys.prefix)')" = "$(cd "$(dirname "$venv")" && pwd)/$(basename "$venv")" ]; then
    echo "$python is the interpreter of $venv itself: run make PYTHON=/path/to/python3 ..." >&2
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "$python is Python $("$python" -c 'import platform; print(platform.python_version())');" \
         "ansible-core 2.19 needs 3.11 or newer: run make PYTHON=python3.11 ..." >&2
    exit 1
fi
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    echo "$python cannot create virtual environments (on Debian/Ubuntu: apt-get install python3-venv)" >&2
    exit 1
fi

rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
"$venv/bin/python" -c 'import platform; from ansible.release import __version__ as core
print("Python %s, ansible-core %s" % (platform.python_version(), core))'
touch "$stamp"
