"""The runtime interface: the small set of verbs every runtime plugin implements."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from .model import (
    EXEC_OUTPUT_LIMIT,
    Container,
    ContainerSpec,
    Event,
    ExecResult,
    HistoryEntry,
    Image,
    LogLine,
    PullProgress,
)

ProgressCallback = Callable[[PullProgress], None]


@runtime_checkable
class Runtime(Protocol):
    """A container runtime, as orchestr drives it.

    Every method is async and works on the runtime's own container id. Only containers
    carrying orchestr's ownership labels (see orchestr.model) are ever listed or touched.
    Errors are orchestr.errors types: NotFound, Conflict, RuntimeFailure, RuntimeUnavailable.
    """

    name: str

    # -- containers ---------------------------------------------------------------------
    async def create(self, spec: ContainerSpec) -> Container:
        """Create (not start) a container; the image must already be present (see ensure_image)."""

    async def start(self, id: str) -> None:
        """Start a created or exited container."""

    async def stop(self, id: str, *, signal: str = "SIGTERM", timeout: float = 10.0) -> None:
        """Send signal, wait up to timeout seconds, then SIGKILL. Stopping a stopped container is a no-op."""

    async def delete(self, id: str, *, force: bool = False) -> None:
        """Remove a container and everything it owns; force stops it first."""

    async def pause(self, id: str) -> None:
        """Freeze every process of the container."""

    async def resume(self, id: str) -> None:
        """Thaw a paused container."""

    async def inspect(self, id: str) -> Container:
        """The container's current state."""

    async def list(self, namespace: str | None = None) -> list[Container]:
        """Every orchestr-owned container, optionally of one namespace."""

    def logs(self, id: str, *, follow: bool = False, tail: int | None = None) -> AsyncIterator[LogLine]:
        """The container's output, oldest first; follow keeps streaming until it exits."""

    async def exec(
        self, id: str, argv: Sequence[str], *, env: dict[str, str] | None = None, user: str | None = None,
        workdir: str | None = None, output: Callable[[LogLine], None] | None = None,
        output_limit: int = EXEC_OUTPUT_LIMIT,
    ) -> ExecResult:
        """Run a command in a running container. With output, its output goes there as it comes (in chunks, not
        lines), and the result's stdout and stderr stay empty; without, each stream is kept up to output_limit
        bytes, and the rest is counted in the result (stdout_dropped, stderr_dropped)."""

    async def wait(self, id: str) -> int:
        """Wait until the container exits; return its exit code."""

    def events(self) -> AsyncIterator[Event]:
        """State changes of orchestr-owned containers, as they happen, until cancelled."""

    async def reattach(self) -> list[Container]:
        """Find containers left by an earlier process (or a crash), clean what is stale, return the live ones."""

    async def close(self) -> None:
        """Release connections; containers keep running."""

    # -- images -------------------------------------------------------------------------
    async def ensure_image(self, ref: str, progress: ProgressCallback | None = None) -> Image:
        """Return the local image, pulling it first when absent."""

    async def pull(self, ref: str, progress: ProgressCallback | None = None) -> Image:
        """Fetch an image from its registry, reporting progress."""

    async def import_image(self, path: Path, progress: ProgressCallback | None = None) -> list[Image]:
        """Load a docker-archive (`docker save`) or OCI image-layout tarball."""

    async def images(self) -> list[Image]:
        """Every local image."""

    async def image_inspect(self, ref: str) -> dict:
        """The image's config and layers, shaped like `docker image inspect`."""

    async def image_history(self, ref: str) -> list[HistoryEntry]:
        """One entry per history step, newest first, as `docker history`."""

    async def image_remove(self, ref: str, *, force: bool = False) -> None:
        """Remove an image; refused (Conflict) while a container uses it unless force."""

    async def image_prune(self) -> list[str]:
        """Remove unused images; return what was removed."""


class ExecOutput:
    """What exec does with a command's output, for any runtime: hands it to output as it comes, or keeps up to
    limit bytes of each stream and counts the rest, so that a command's output never fills memory."""

    def __init__(self, output: Callable[[LogLine], None] | None, limit: int = EXEC_OUTPUT_LIMIT):
        self.output, self.limit = output, max(0, limit)
        self.kept = {"stdout": bytearray(), "stderr": bytearray()}
        self.dropped = {"stdout": 0, "stderr": 0}

    def add(self, stream: str, data: bytes) -> None:
        if self.output is not None:
            self.output(LogLine(stream=stream, data=data))
            return
        kept = self.kept[stream]
        room = max(0, self.limit - len(kept))
        kept += data[:room]
        self.dropped[stream] += max(0, len(data) - room)

    def result(self, exit_code: int) -> ExecResult:
        return ExecResult(exit_code, bytes(self.kept["stdout"]), bytes(self.kept["stderr"]),
                          self.dropped["stdout"], self.dropped["stderr"])
