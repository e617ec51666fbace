#!/usr/bin/env bash
# Create bench/.venv-parsedmarc with the latest parsedmarc, kept apart from the project venv
# so its large dependency tree never touches dmarcbot's own environment. Idempotent: an
# existing venv whose parsedmarc imports is left as it is (pass --upgrade to refresh it).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-parsedmarc"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3

if [[ "${1:-}" != "--upgrade" && -x "$venv/bin/python" ]] \
    && "$venv/bin/python" -c "import parsedmarc" >/dev/null 2>&1; then
    echo "parsedmarc already installed in $venv:"
    "$venv/bin/python" -m pip show parsedmarc | sed -n 's/^Version: /  version /p'
    exit 0
fi

[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
# The normal configured pip index (pip.conf / PIP_* environment) is used; no host is named here.
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet --upgrade parsedmarc
"$venv/bin/python" -c "import parsedmarc; print('parsedmarc', parsedmarc.__version__)"
