#!/usr/bin/env bash
# Longer fuzzing runs than CI's: every hypothesis property test with the "long" profile
# (20,000 examples each). Usage: bash scripts/fuzz.sh [pytest -k expression]
set -euo pipefail
cd "$(dirname "$0")/.."
export WATTLENS_FUZZ_PROFILE=long
python -m pytest -q -m "not browser" tests/hardening tests/collector/test_schema.py \
  ${1:+-k "$1"}
