#!/usr/bin/env bash
# Longer fuzzing than CI's: every hypothesis property test with the "long" profile (20,000
# examples each instead of 150): line protocol, InfluxQL quoting, the job ingest endpoint,
# the rule-file parser, the config loader, counters, the stores. Regressions found by a
# long run are added as explicit tests. Usage: bash scripts/fuzz.sh [pytest -k expression]
set -euo pipefail
cd "$(dirname "$0")/.."
export WATTLENS_FUZZ_PROFILE=long
python -m pytest -q -m "not browser and not integration" \
  tests/hardening/test_fuzz_inputs.py tests/collector/test_schema.py \
  tests/collector/store/test_influxql.py tests/collector/test_ingest.py \
  tests/collector/test_counters.py tests/collector/test_attribution.py \
  tests/analytics/test_properties.py ${1:+-k "$1"}
