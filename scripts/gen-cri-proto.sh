#!/usr/bin/env bash
# The name this script had before the containerd runtime had protos too: scripts/gen-proto.sh regenerates all.
exec "$(dirname "$0")/gen-proto.sh" "$@"
