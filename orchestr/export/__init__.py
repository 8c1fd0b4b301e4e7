"""Specs as another engine's objects, one module per format: kubernetes.py for Kubernetes manifests."""
