#!/usr/bin/env bash
# Set up surge on a fresh Debian machine: system packages, then a virtualenv at .venv.
#   scripts/setup.sh        what `surge up` needs
#   scripts/setup.sh --dev  plus what the tests and benchmarks need
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1

SYSTEM_PACKAGES=(python3-venv)
# Tests and benchmarks use real peers: Starman for the Perl example, nginx as the reference,
# wrk for load, redis-server for Celery/Dramatiq comparisons, Devel::NYTProf for profiling
# the Perl example (profile = "nytprof").
DEV_PACKAGES=(starman libplack-perl libjson-xs-perl nginx wrk redis-server
              libdevel-nytprof-perl)

need=()
for pkg in "${SYSTEM_PACKAGES[@]}" $([[ $DEV == 1 ]] && echo "${DEV_PACKAGES[@]}"); do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if (( ${#need[@]} )); then
    SUDO=""; [[ $(id -u) != 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
extras=""; [[ $DEV == 1 ]] && extras="[dev]"
.venv/bin/pip install -q --disable-pip-version-check -e ".${extras}"
