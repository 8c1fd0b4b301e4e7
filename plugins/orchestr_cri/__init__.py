"""orchestr's CRI runtime: any Kubernetes container runtime (containerd's CRI, CRI-O) through CRI v1 over gRPC.

grpc and the generated messages are imported only when the runtime is opened.
"""

from __future__ import annotations

from orchestr.hookspecs import hookimpl


def _open(config):
    from .runtime import CriRuntime

    return CriRuntime(config)


@hookimpl
def orchestr_runtimes():
    return {"cri": _open}
