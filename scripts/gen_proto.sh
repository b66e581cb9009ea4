#!/usr/bin/env bash
# Regenerates proto/hedui/v1/*_pb2*.py{,i} from the .proto files with the pinned
# grpcio-tools and mypy-protobuf (pyproject.toml [dev]). CI runs this and fails on a diff.
# Generates into a temporary folder first, so a failure never leaves the tree without code.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
BIN=$(dirname "$(command -v "$PY")")
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
"$PY" -m grpc_tools.protoc -I proto \
  --plugin=protoc-gen-mypy="$BIN/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$BIN/protoc-gen-mypy_grpc" \
  --python_out="$OUT" --mypy_out="$OUT" \
  --grpc_python_out="$OUT" --mypy_grpc_out="$OUT" \
  proto/hedui/v1/*.proto
rm -f proto/hedui/v1/*_pb2.py proto/hedui/v1/*_pb2_grpc.py proto/hedui/v1/*_pb2.pyi proto/hedui/v1/*_pb2_grpc.pyi
cp "$OUT"/hedui/v1/*_pb2* proto/hedui/v1/
