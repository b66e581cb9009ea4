#!/usr/bin/env bash
# Mutation testing of Hedui modules (docs/testing.md):
#   bash scripts/mutation.sh adapters/idnum.py node/audit/merkle.py [--sample 40 --seed 1] [--min-score 90] [--json]
# Sets up .venv (scripts/dev.sh) with the [mutation] extra (cosmic-ray, coverage), then runs
# scripts/mutation/run.py. The worktree is never modified: mutants live in a temporary copy.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${HEDUI_VENV:-.venv}
bash scripts/dev.sh setup
if ! "$VENV/bin/python" -c "import cosmic_ray, coverage" 2>/dev/null; then
  "$VENV/bin/python" -m pip install --quiet -e ".[test,dev,mutation]"
fi
exec "$VENV/bin/python" scripts/mutation/run.py "$@"
