#!/usr/bin/env bash
# Install everything the tests need (Python packages and the Debian packages of the real
# servers), then run ruff, mypy and every test. The servers (InfluxDB, VictoriaMetrics,
# Prometheus, Alertmanager, headless Chromium) are started by the test fixtures on free
# 127.0.0.1 ports with temp data dirs, and stopped afterwards.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1

DEBIAN_PACKAGES=(influxdb victoria-metrics prometheus prometheus-alertmanager chromium
                 chromium-driver docker-compose yamllint)
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

echo "== installing Python packages (pinned by constraints.txt)"
python -m pip install -q -c constraints.txt "torch==2.13.0" -e ".[test]"

echo "== ruff"
ruff check .
echo "== mypy"
mypy

echo "== pytest"
# pytest exits 5 when no test ran: set -e makes that, like any failure, fail this script.
python -m pytest --headless "$@"
