#!/usr/bin/env bash
# What the tests need beyond Python packages: Debian's knot (a real DNS server on loopback) and
# Azurite (Azure Storage's emulator, for the Table Storage store), pinned to 3.35.0, the last
# release that runs on Node 20. Quick when both are already installed. Run as root (or sudo).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v knotd >/dev/null 2>&1 && [ ! -x /usr/sbin/knotd ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends knot
fi
if [ ! -x azurite/node_modules/.bin/azurite ]; then
    mkdir -p azurite
    (cd azurite && npm install --no-audit --no-fund --no-save --silent azurite@3.35.0)
fi
# The card rendering tests: Debian's chromium, and the npm packages pinned in
# cards_render/package.json + package-lock.json (adaptivecards, markdown-it, playwright-core).
# playwright-core drives the system chromium and downloads no browser of its own.
if [ ! -x /usr/bin/chromium ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium
fi
if ! (cd cards_render && node -e '
    const want = require("./package.json").dependencies;
    for (const [name, version] of Object.entries(want)) {
      if (require(`./node_modules/${name}/package.json`).version !== version) process.exit(1);
    }' 2>/dev/null); then
    (cd cards_render && npm ci --no-audit --no-fund --silent)
fi
# Microsoft's Python worker for 3.13+ (PyPI azure-functions-runtime) in a venv of its own, for
# tests/test_worker_index.py and bench/first_click_bench.py: Python 3.13, the pinned worker and
# the app's runtime requirements; the app itself is imported from the repo, never installed.
# pip runs only when the pin or requirements.txt change (the marker holds their digest).
worker_runtime="azure-functions-runtime==1.3.0"
worker_key="$(cat ../requirements.txt - <<<"$worker_runtime" | sha256sum | cut -d' ' -f1)"
if ! .venv-worker/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' \
        2>/dev/null; then
    py313=""
    for candidate in "${PYTHON313:-}" "$(command -v python3.13 || true)" \
            "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.13*/bin/python3.13 \
            /usr/local/bin/python3.13 /usr/bin/python3.13; do
        # a pyenv shim exists on PATH but fails unless 3.13 is selected: try each one
        if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c \
                'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
            py313="$candidate"
            break
        fi
    done
    if [ -z "$py313" ]; then
        echo "install-test-deps.sh: no Python 3.13 found; set PYTHON313=/path/to/python3.13" >&2
        exit 1
    fi
    rm -rf .venv-worker
    "$py313" -m venv .venv-worker
fi
if [ "$(cat .venv-worker/.installed 2>/dev/null)" != "$worker_key" ]; then
    .venv-worker/bin/python -m pip install --quiet --upgrade pip
    .venv-worker/bin/python -m pip install --quiet "$worker_runtime" -r ../requirements.txt
    echo "$worker_key" > .venv-worker/.installed
fi
# The Teams app package tests: Microsoft's Teams app manifest JSON schemas, as shipped in the npm
# package @microsoft/app-manifest pinned in teams_manifest/package.json + package-lock.json.
if ! (cd teams_manifest && node -e '
    const want = require("./package.json").dependencies;
    for (const [name, version] of Object.entries(want)) {
      if (require(`./node_modules/${name}/package.json`).version !== version) process.exit(1);
    }' 2>/dev/null); then
    (cd teams_manifest && npm ci --no-audit --no-fund --ignore-scripts --silent)
fi
# tests/test_setup_scripts.py lints scripts/*.sh with Debian's shellcheck.
if ! command -v shellcheck >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends shellcheck
fi
