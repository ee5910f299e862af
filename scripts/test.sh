#!/usr/bin/env bash
# Run every test from nothing: install the Debian packages of the real servers, build a
# brand-new virtual environment in a temporary directory, install into it only what
# pyproject.toml and constraints.txt name, then run ruff, mypy and pytest inside it.
# No venv needs to be active first: the script makes its own and removes it afterwards,
# so nothing from the machine's own site-packages can leak into the run.
# The servers (InfluxDB, VictoriaMetrics, Prometheus, Alertmanager, headless Chromium) are
# started by the test fixtures on free 127.0.0.1 ports with temp data dirs, and stopped.
# Usage: bash scripts/test.sh [pytest args...]
#   WATTLENS_TEST_VENV=DIR   reuse (or create) the venv at DIR instead of a temp one
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
unset PYTHONPATH PYTHONHOME PYTHONUSERBASE VIRTUAL_ENV
export PYTHONNOUSERSITE=1   # ~/.local site-packages must not leak in either

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

PYTHON=${PYTHON:-python3}
if [ -n "${WATTLENS_TEST_VENV:-}" ]; then
  VENV=$WATTLENS_TEST_VENV
else
  VENV=$(mktemp -d -t wattlens-test-venv.XXXXXX)
  trap 'rm -rf "$VENV"' EXIT
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating a fresh virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
fi
export VIRTUAL_ENV=$VENV PATH="$VENV/bin:$PATH"
hash -r

echo "== installing Python packages into it (pinned by constraints.txt)"
python -m pip install -q -c constraints.txt -e ".[test,torch]"
python - <<'EOF'
import sys
assert sys.prefix != sys.base_prefix, "not inside the fresh venv"
import site
leaked = [p for p in sys.path if "site-packages" in p and not p.startswith(sys.prefix)]
assert not leaked, f"site-packages from outside the venv on sys.path: {leaked}"
EOF

echo "== ruff"
ruff check .
echo "== mypy"
mypy

echo "== pytest"
# pytest exits 5 when no test ran: set -e makes that, like any failure, fail this script.
python -m pytest --headless "$@"
echo "== done in $(( ($(date +%s) - started) / 60 )) min"
