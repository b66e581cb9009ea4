#!/usr/bin/env bash
# mypy over the product packages (pyproject [tool.mypy]). The import names are mapped from
# the top-level folders (DESIGN.md "Layout and imports"), which mypy cannot follow by itself:
# a throwaway tree of links lays them out as the hedui package first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
case "$PY" in /*) ;; */*) PY="$PWD/$PY" ;; esac
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree/hedui"
ln -s "$PWD/proto/hedui/__init__.py" "$tree/hedui/__init__.py"
ln -s "$PWD/proto/hedui/v1" "$tree/hedui/v1"
for d in common keys adapters node; do ln -s "$PWD/$d" "$tree/hedui/$d"; done
cd "$tree"
exec "$PY" -m mypy --config-file "$OLDPWD/pyproject.toml" -p hedui.common -p hedui.keys -p hedui.adapters -p hedui.node "$@"
