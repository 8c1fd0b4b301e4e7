#!/usr/bin/env bash
# Regenerates the cri runtime's protobuf messages and gRPC stubs from plugins/orchestr_cri/proto/cri.proto.
# Rerunnable; the generated modules are committed, so only a change to cri.proto needs this.
# Needs grpcio-tools (pip install -e '.[codegen]'), whose version pairs with the pinned grpcio and protobuf.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
OUT=plugins/orchestr_cri/proto

"$PYTHON" -c 'import grpc_tools' 2>/dev/null \
    || { echo "gen-cri-proto: grpcio-tools is missing: $PYTHON -m pip install -e '.[codegen]'" >&2; exit 1; }
rm -f "$OUT"/cri_pb2.py "$OUT"/cri_pb2.pyi "$OUT"/cri_pb2_grpc.py
# -I plugins: the modules import each other as orchestr_cri.proto.*, and the descriptor is registered under
# orchestr_cri/proto/cri.proto, a name no other plugin's protos take.
"$PYTHON" -m grpc_tools.protoc -I plugins --python_out=plugins --pyi_out=plugins --grpc_python_out=plugins \
    "$OUT/cri.proto"
echo "gen-cri-proto: wrote $OUT/cri_pb2.py, cri_pb2.pyi and cri_pb2_grpc.py"
