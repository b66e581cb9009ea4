#!/usr/bin/env bash
# The date-sensitive tests (pytest -m timesensitive) under libfaketime at several instants
# (docs/time.md "Tests"). Usage: bash scripts/faketime-tests.sh ["UTC instant|TZ" ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
command -v faketime >/dev/null || { echo "faketime: not installed (apt-get install faketime)" >&2; exit 1; }

instants=("$@")
if [ ${#instants[@]} -eq 0 ]; then
  instants=(
    "2026-11-30 23:30:00|UTC"                   # last day of a month, 23:30 UTC = 1 December in China
    "2028-02-29 12:00:00|America/Los_Angeles"   # 29 February, machine zone not the federation's
    "2026-12-31 20:00:00|UTC"                   # 31 December 20:00 UTC = New Year's Day in China
    "2031-06-15 03:00:00|UTC"                   # a year chinese-calendar does not cover
  )
fi

for spec in "${instants[@]}"; do
  at=${spec%%|*}
  tz=${spec#*|}
  [ "$tz" = "$spec" ] && tz=UTC
  local_start=$(TZ=$tz date -d "$at UTC" '+%Y-%m-%d %H:%M:%S')
  echo "-- $at UTC (machine zone $tz: $local_start)"
  TZ=$tz faketime -f "@$local_start" \
    "$PY" -m pytest -q -p no:cacheprovider -m timesensitive tests
done
