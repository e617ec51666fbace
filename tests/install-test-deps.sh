#!/usr/bin/env bash
# What the tests need beyond Python packages: Debian's knot (a real DNS server on loopback).
# Quick when it is already installed. Run as root (or through sudo).
set -euo pipefail
if command -v knotd >/dev/null 2>&1 || [ -x /usr/sbin/knotd ]; then
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends knot
