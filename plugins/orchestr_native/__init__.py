"""orchestr's native runtime: its own OCI image store and daemonless containers; loaded only when opened."""

from __future__ import annotations

from orchestr.hookspecs import hookimpl


def _open(config):
    from .runtime import NativeRuntime

    return NativeRuntime(config)


@hookimpl
def orchestr_runtimes():
    return {"native": _open}
