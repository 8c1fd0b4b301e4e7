"""orchestr's Kubernetes runtime; the API client is imported only when the runtime is opened."""

from __future__ import annotations

from orchestr.hookspecs import hookimpl


def _open(config):
    from .runtime import KubernetesRuntime

    return KubernetesRuntime(config)


@hookimpl
def orchestr_runtimes():
    return {"kubernetes": _open}
