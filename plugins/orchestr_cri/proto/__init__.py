"""CRI v1 messages and gRPC stubs, generated from cri.proto by scripts/gen-cri-proto.sh (do not edit by hand)."""
