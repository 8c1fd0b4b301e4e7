"""This machine's OCI platform, and choosing the manifest for it out of an index."""

from __future__ import annotations

import os

from orchestr.errors import NotFound
from orchestr.plain import Frozen, record

# uname machine -> (GOARCH, variant), as OCI platforms name them
_MACHINES = {
    "x86_64": ("amd64", None), "amd64": ("amd64", None),
    "aarch64": ("arm64", "v8"), "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"), "armv5tel": ("arm", "v5"),
    "i386": ("386", None), "i686": ("386", None),
    "ppc64le": ("ppc64le", None), "s390x": ("s390x", None), "riscv64": ("riscv64", None),
}


@record
class Platform(Frozen):
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def host() -> Platform:
    machine = os.uname().machine  # what platform.machine() answers on Linux, without importing platform
    arch, variant = _MACHINES.get(machine, (machine, None))
    return Platform("linux", arch, variant)


def _matches(p: dict, want: Platform) -> int:
    """0 when p does not run here; otherwise higher is a better match."""
    if p.get("os") != want.os or p.get("architecture") != want.architecture:
        return 0
    variant = p.get("variant")
    if variant == want.variant:
        return 3
    if not variant:
        return 2
    # arm64 images are v8 whether or not they say so; older arm variants run on newer CPUs
    if want.variant and variant.startswith("v") and want.variant.startswith("v"):
        try:
            return 1 if int(variant[1:]) <= int(want.variant[1:]) else 0
        except ValueError:
            return 0
    return 0


def select(descriptors: list[dict], what: str, want: Platform | None = None) -> dict:
    """The descriptor of an index that best runs on want (this machine by default)."""
    want = want or host()
    scored = [(_matches(d.get("platform") or {}, want), i, d) for i, d in enumerate(descriptors)]
    scored = [s for s in scored if s[0]]
    if not scored:
        have = ", ".join(
            str(Platform(p.get("os", "?"), p.get("architecture", "?"), p.get("variant")))
            for p in (d.get("platform") or {} for d in descriptors)
        )
        raise NotFound(f"{what}: no image for {want} in its index (it has: {have or 'nothing'})")
    return max(scored, key=lambda s: (s[0], -s[1]))[2]
