#!/usr/bin/env bash
# Regenerates the protobuf messages and gRPC stubs of every runtime plugin with protos of its own
# (plugins/*/proto/*.proto: the cri runtime's CRI v1, the containerd runtime's containerd 1.6 API).
# Rerunnable; the generated modules are committed, so only a change to a .proto needs this.
# Needs grpcio-tools (pip install -e '.[codegen]'), whose version pairs with the pinned grpcio and protobuf.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}

"$PYTHON" -c 'import grpc_tools' 2>/dev/null \
    || { echo "gen-proto: grpcio-tools is missing: $PYTHON -m pip install -e '.[codegen]'" >&2; exit 1; }
for dir in plugins/*/proto; do
    protos=("$dir"/*.proto)
    [ -e "${protos[0]}" ] || continue
    rm -f "$dir"/*_pb2.py "$dir"/*_pb2.pyi "$dir"/*_pb2_grpc.py
    # -I plugins: the modules import each other as <plugin>.proto.*, and each descriptor is registered under
    # <plugin>/proto/NAME.proto, a name no other plugin's protos take.
    "$PYTHON" -m grpc_tools.protoc -I plugins --python_out=plugins --pyi_out=plugins --grpc_python_out=plugins \
        "${protos[@]}"
    echo "gen-proto: wrote $dir/{$(cd "$dir" && ls *.proto | sed 's/\.proto$//' | paste -sd,)}_pb2*.py"
done
