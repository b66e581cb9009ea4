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

# Two instants at a time (FAKETIME_JOBS): each run is one pytest process, mostly a collection
# of the whole suite and the demo, so on two cores two runs take the time of one. Each has
# its own --basetemp; their output is printed in order once all have ended.
jobs=${FAKETIME_JOBS:-2}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

run() {   # index, spec
  local spec=$2 at tz local_start
  at=${spec%%|*}
  tz=${spec#*|}
  [ "$tz" = "$spec" ] && tz=UTC
  local_start=$(TZ=$tz date -d "$at UTC" '+%Y-%m-%d %H:%M:%S')
  local rc=0
  {
    echo "-- $at UTC (machine zone $tz: $local_start)"
    TZ=$tz faketime -f "@$local_start" \
      "$PY" -m pytest -q -p no:cacheprovider --basetemp "$out/tmp$1" -m timesensitive tests || rc=$?
  } > "$out/$1.log" 2>&1
  echo "$rc" > "$out/$1.rc"
}

for i in "${!instants[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  run "$i" "${instants[$i]}" &
done
wait

status=0
for i in "${!instants[@]}"; do
  cat "$out/$i.log"
  [ "$(cat "$out/$i.rc" 2>/dev/null)" = 0 ] || status=1
done
exit $status
