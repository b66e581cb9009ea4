#!/usr/bin/env bash
# The sampled mutation run of CI (.ci/run; docs/testing.md "In CI"): 10 mutants (seed 1) of
# each of 3 core modules, each with its focused unit-test files, failing under 90 %
# (excluding the equivalents listed in tests/mutation-equivalents.md). The 3 modules rotate
# with the commit count, so every module comes round every few commits; a given commit always
# runs the same modules and mutants (reproducible: no clock, no randomness).
#   bash scripts/mutation-ci.sh            # the commit's 3 modules
#   bash scripts/mutation-ci.sh 4          # rotation slot 4 (modules 4, 5, 6 of the list)
set -euo pipefail
cd "$(dirname "$0")/.."

# module|its focused unit-test files (what the mapping run executes)
MODULES=(
  "adapters/idnum.py|tests/test_idnum.py"
  "node/discovery/calendar.py|tests/test_calendar.py tests/test_calendar_coverage.py"
  "node/audit/merkle.py|tests/test_merkle_edges.py tests/test_merkle_properties.py tests/test_merkle_vectors.py"
  "node/audit/note.py|tests/test_note_edges.py tests/test_note_vectors.py"
  "node/policy.py|tests/test_policy_quota.py"
  "node/verification/reckon.py|tests/test_hub_reckon.py"
  "node/verification/report.py|tests/test_report_units.py tests/test_report_store.py"
  "node/verification/rules.py|tests/test_hub_rules.py tests/test_verification_bounds.py"
  "node/verification/catalogue.py|tests/test_catalogue.py tests/test_catalogue_units.py"
  "node/verification/answer.py|tests/test_answer_windows.py tests/test_verification_bounds.py"
)
N=${#MODULES[@]}
slot=${1:-$(git rev-list --count HEAD 2>/dev/null || echo 0)}
mods=() tests=()
for k in 0 1 2; do
  IFS='|' read -r m t <<<"${MODULES[$(((slot * 3 + k) % N))]}"
  mods+=("$m")
  for f in $t; do [[ " ${tests[*]-} " == *" $f "* ]] || tests+=("$f"); done
done
echo "mutation (slot $slot): ${mods[*]}"
exec bash scripts/mutation.sh "${mods[@]}" --sample 10 --seed 1 --min-score 90 --tests "${tests[@]}"
