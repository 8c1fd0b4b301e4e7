"""Mounts the image's layers and the container's writable layer as one overlayfs."""

from __future__ import annotations

import errno
import os

from ..process import linux

MAX_OPTIONS = 4095  # the kernel copies at most one page of mount options


def mount(layers: list[str], upper: str, work: str, target: str, flags: int = 0) -> None:
    """layers bottom first, as the image lists them; overlayfs wants the top one first."""
    lower = list(reversed(layers))
    for path in (*lower, upper, work):
        if ":" in path or "," in path:
            raise OSError(errno.EINVAL, f"overlay layer path {path} contains ':' or ','")
    # Relative paths from a common directory keep many layers within the one-page option limit.
    base = os.path.commonpath([*lower, upper, work])

    def rel(p: str) -> str:
        return os.path.relpath(p, base)

    options = f"lowerdir={':'.join(rel(p) for p in lower)},upperdir={rel(upper)},workdir={rel(work)}"
    if len(options) > MAX_OPTIONS:
        raise OSError(errno.E2BIG, f"overlay options for {len(lower)} layers exceed one page")
    cwd = os.getcwd()
    os.chdir(base)
    try:
        linux.mount("overlay", target, "overlay", flags, options)
    finally:
        os.chdir(cwd)
