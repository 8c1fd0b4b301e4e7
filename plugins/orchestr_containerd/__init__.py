"""orchestr's containerd runtime: containers, images and networks in a containerd 1.6 through its own gRPC API.

grpc and the generated messages are imported only when the runtime is opened.
"""

from __future__ import annotations

from orchestr.hookspecs import hookimpl


def _open(config):
    from .runtime import ContainerdRuntime

    return ContainerdRuntime(config)


@hookimpl
def orchestr_runtimes():
    return {"containerd": _open}
