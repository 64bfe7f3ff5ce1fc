#!/usr/bin/env bash
# Set up everything the tests need, then lint, type-check and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
# Loopback load tests open many connections: widen the ephemeral port range when allowed.
if [[ -w /proc/sys/net/ipv4/ip_local_port_range ]]; then
    echo "1024 65000" > /proc/sys/net/ipv4/ip_local_port_range || true
fi
.venv/bin/ruff check src tests bench
.venv/bin/mypy
.venv/bin/pytest -q "$@"
