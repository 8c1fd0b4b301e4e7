"""The native runtime's containers: every verb, each handed to the module that does it (lifecycle, exec, stats,
run), and their logs and events, followed as the supervisor and the verbs append to them."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable, Sequence

import anyio

from orchestr.config import private_dir
from orchestr.errors import NotFound
from orchestr.model import (
    EXEC_OUTPUT_LIMIT, Container, ContainerSpec, Event, ExecResult, LogLine, Resources, State, Stats,
)

from orchestr import logfile as logs

from . import exec, follow, lifecycle, mapping, run, stats, steps
from .store import ContainerStore, supervised
from .supervisor import records


class Containers(ContainerStore):
    """Containers of one state dir, as the runtime drives them."""

    async def inspect(self, id: str) -> Container:
        return self.view(*self.load(id))

    async def list(self, namespace: str | None = None) -> list[Container]:
        return self.listed(namespace)

    def uses_image(self, image_id: str) -> bool:
        """Whether any container, whatever its state, was created from image_id."""
        for id in self.ids():
            config = records.read_json(str(self.dir / id / records.CONFIG))
            if config and config["image_id"] == image_id:
                return True
        return False

    # -- logs and events: the files the supervisor and the verbs append to, followed ------

    def logs(self, id: str, *, follow: bool = False, tail: int | None = None) -> AsyncIterator[LogLine]:
        return steps.stream(self.log_steps(id, follow, tail))

    def log_steps(self, id: str, following: bool, tail: int | None) -> steps.Steps[None]:
        """Yields the container's LogLines; when following, until it has ended and its output is all read."""
        self.load(id)
        path = str(self.dir / id / logs.FILE)
        history, current = logs.history(path, tail)
        try:
            yield from filter(None, map(mapping.log_line, history))
            if following:
                yield from follow.lines(path, current, mapping.log_line, functools.partial(self._written, id))
        finally:
            if current is not None:
                current.close()

    def _written(self, id: str) -> bool:
        """Whether the container's output is all written: it has ended and no supervisor looks after it."""
        try:
            config, state = self.load(id)
        except NotFound:
            return True
        return self.view(config, state).state not in (State.RUNNING, State.PAUSED) and not supervised(state)

    def events(self) -> AsyncIterator[Event]:
        """Events from the moment of this call, not of the first iteration: a caller can subscribe, then act."""
        path = self.root / records.EVENTS
        private_dir(self.root)
        path.touch(0o600)
        info = os.stat(path)
        return steps.stream(self._event_steps(str(path), info.st_ino, info.st_size))

    def _event_steps(self, path: str, inode: int, offset: int) -> steps.Steps[None]:
        f = open(path, "rb")
        if os.fstat(f.fileno()).st_ino == inode:  # else rotated meanwhile: all of the new file is news
            f.seek(offset)
        yield from follow.lines(path, f, mapping.event)

    # -- the other verbs ----------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> Container:
        return await anyio.to_thread.run_sync(lifecycle.create, self, spec)

    async def start(self, id: str) -> None:
        await steps.drive(lifecycle.start_steps(self, id))

    async def stop(self, id: str, *, signal: str = "SIGTERM", timeout: float = 10.0) -> None:
        await steps.drive(lifecycle.stop_steps(self, id, signal, timeout))

    async def delete(self, id: str, *, force: bool = False) -> None:
        await steps.drive(lifecycle.delete_steps(self, id, force))

    async def pause(self, id: str) -> None:
        await lifecycle.pause(self, id)

    async def resume(self, id: str) -> None:
        await lifecycle.resume(self, id)

    async def signal(self, id: str, signal: str) -> None:
        lifecycle.signal(self, id, signal)

    async def update(self, id: str, resources: Resources) -> None:
        await anyio.to_thread.run_sync(lifecycle.update, self, id, resources)

    async def wait(self, id: str) -> int:
        return await steps.drive(lifecycle.wait_steps(self, id))

    async def reattach(self) -> list[Container]:
        return await anyio.to_thread.run_sync(lifecycle.reattach, self)

    async def stats(self, id: str) -> Stats:
        return stats.read(self, id)

    async def exec(
        self, id: str, argv: Sequence[str], *, env: dict[str, str] | None = None, user: str | None = None,
        workdir: str | None = None, timeout: float | None = None, output: Callable[[LogLine], None] | None = None,
        output_limit: int = EXEC_OUTPUT_LIMIT,
    ) -> ExecResult:
        return await exec.run(self, id, argv, env=env, user=user, workdir=workdir, timeout=timeout, output=output,
                              output_limit=output_limit)

    async def exec_terminal(self, id: str, argv: Sequence[str], *, stdin: int | None, stdout: int,
                            env: dict[str, str] | None = None, user: str | None = None,
                            workdir: str | None = None) -> int:
        return await exec.terminal(self, id, argv, stdin=stdin, stdout=stdout, env=env, user=user, workdir=workdir)

    def run(self, spec: ContainerSpec, output: Callable[[LogLine], None] | None = None,
            remove: bool = False, stdin: int | None = None, on_signal: str | None = None) -> tuple[Container, int]:
        """A one-off container run to its end, blocking: see run.run."""
        return run.run(self, spec, output, remove, stdin, on_signal)

    def supervisor_pids(self) -> list[int]:
        """The supervisor's processes of this state dir when it runs, its keeper (when it has one) first, then
        its worker (for measuring what supervision costs)."""
        reply = self.supervisor.ask({"op": "ping"})
        return [pid for pid in (reply.get("keeper"), reply["pid"]) if pid] if reply else []
