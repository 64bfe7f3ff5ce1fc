#!/usr/bin/env bash
# Set up everything the tests need, then lint, type-check and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
# Loopback load tests open many connections: widen the ephemeral port range when allowed.
# It starts above surge's fixed default ports (8080, 8081, 9324), so an outgoing connection
# never takes one of them from a later `surge up`.
if [[ -w /proc/sys/net/ipv4/ip_local_port_range ]]; then
    echo "10240 65000" > /proc/sys/net/ipv4/ip_local_port_range || true
fi
# A gateway process being replaced hands the connections waiting in its accept queue to its
# siblings instead of resetting them (SO_REUSEPORT; Linux ≥ 5.14).
if [[ -w /proc/sys/net/ipv4/tcp_migrate_req ]]; then
    echo 1 > /proc/sys/net/ipv4/tcp_migrate_req || true
fi
.venv/bin/ruff check src tests bench
.venv/bin/mypy
.venv/bin/pytest -q "$@"
