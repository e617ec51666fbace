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
