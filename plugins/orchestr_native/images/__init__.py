"""The native runtime's OCI image store: references, blobs, layers, registries and archives."""
