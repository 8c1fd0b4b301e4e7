"""Bridge networking through CNI plugins (not yet): a container asking for it is refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from orchestr.errors import TerminalFailure
from orchestr.model import ContainerSpec

from .client import RUNTIME

if TYPE_CHECKING:
    from .network import Attached
    from .runtime import ContainerdRuntime


async def attach(runtime: ContainerdRuntime, spec: ContainerSpec, id: str, directory: Path,
                 files: dict[str, str]) -> Attached:
    raise TerminalFailure(f"container {spec.name}: the containerd runtime runs network: none and host only so far",
                          runtime=RUNTIME, container=spec.name)


async def detach(runtime: ContainerdRuntime, id: str, directory: Path) -> None:
    return None
