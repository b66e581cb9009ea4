#!/usr/bin/env bash
# One entry point for a newcomer and for CI:
#   bash scripts/dev.sh demo   — set up .venv and run `hedui demo`
#   bash scripts/dev.sh test   — set up .venv and run the whole test suite
#   bash scripts/dev.sh setup  — only set up .venv
# Safe to run again: set-up is skipped when .venv is up to date with pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${HEDUI_VENV:-.venv}
PY=${PYTHON:-python3}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.hedui-installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".[test,dev]"
    touch "$stamp"
  fi
}

ensure_postgres() {
  # The suite runs every storage test on PostgreSQL too (127.0.0.1:5432, trust auth).
  if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
      for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    fi
  fi
}

cmd=${1:-}
shift || true
case "$cmd" in
  setup)
    setup
    ;;
  demo)
    setup
    exec "$VENV/bin/hedui" demo "$@"
    ;;
  test)
    setup
    ensure_postgres
    exec "$VENV/bin/python" -m pytest -n "${HEDUI_TEST_WORKERS:-2}" --dist loadfile "$@"
    ;;
  bench)
    setup
    ensure_postgres
    for b in bench/bench_*.py; do "$VENV/bin/python" "$b" "$@"; done
    ;;
  *)
    echo "usage: bash scripts/dev.sh setup|demo|test|bench [args]" >&2
    exit 2
    ;;
esac
