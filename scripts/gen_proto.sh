#!/usr/bin/env bash
# Regenerates proto/hedui/v1/*_pb2*.py{,i} from the .proto files with the pinned
# grpcio-tools and mypy-protobuf (pyproject.toml [dev]). CI runs this and fails on a diff.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
rm -f proto/hedui/v1/*_pb2.py proto/hedui/v1/*_pb2_grpc.py proto/hedui/v1/*_pb2.pyi proto/hedui/v1/*_pb2_grpc.pyi
"$PY" -m grpc_tools.protoc -I proto \
  --python_out=proto --mypy_out=proto \
  --grpc_python_out=proto --mypy_grpc_out=proto \
  proto/hedui/v1/*.proto
