"""The native runtime's containers: where their records live and how they read, their logs and events, and
every other verb handed to the module that does it (lifecycle, exec, stats, run)."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio

from orchestr.config import Config, private, private_dir
from orchestr.containers import UNKNOWN_EXIT
from orchestr.errors import NotFound, TerminalFailure
from orchestr.model import (
    EXEC_OUTPUT_LIMIT, L_NAMESPACE, Container, ContainerSpec, Event, ExecResult, LogLine, Port, Resources, State,
    Stats,
)

from . import cgroups, exec, follow, lifecycle, logs, mapping, run, stats, steps
from .mapping import RUNTIME
from .supervisor import records
from .supervisor.client import SupervisorClient

if TYPE_CHECKING:
    from .network import Network

MiB = 1 << 20
_ID = re.compile(r"[0-9a-f]{64}")


class ImageStore(Protocol):
    def resolve(self, ref: str) -> str: ...
    def image_config(self, ref_or_id: str) -> dict: ...
    def layer_paths(self, ref_or_id: str) -> list[Path]: ...


class Containers:
    """Containers of one state dir; state_dir/native/containers/<id> holds each one's records and layers."""

    def __init__(self, config: Config, store: ImageStore, *, log_max_size: int = 10 * MiB, log_max_files: int = 3,
                 start_timeout: float = 30.0):
        if os.geteuid() != 0:  # and it will not come to have it: no retry can help
            raise TerminalFailure("the native runtime needs root (rootless mode is not supported)", runtime=RUNTIME)
        self.root = Path(config.state_dir) / "native"
        self.dir = self.root / "containers"
        self.volumes = self.root / "volumes"
        self.store = store
        self.supervisor = SupervisorClient(str(self.root))
        self.cgroup_version = cgroups.version()
        # what every container's config.json gets from this runtime rather than from its spec
        self.settings = {"log": {"max_size": log_max_size, "max_files": log_max_files},
                         "cgroup_version": self.cgroup_version,
                         "start_timeout": start_timeout}  # for a container's first process to exec its command

    @functools.cached_property
    def network(self) -> Network:
        from .network import Network  # loads only for containers that have a bridge network, and for sweeps

        return Network(self.root)

    # -- records ------------------------------------------------------------------------

    def cgroup(self, id: str) -> cgroups.Manager:
        return cgroups.manager(id, cgroup_version=self.cgroup_version)

    def load(self, id: str) -> tuple[dict, dict]:
        """The container's config.json and state.json."""
        config = records.read_json(str(self.dir / id / records.CONFIG)) if _ID.fullmatch(id) else None
        if config is None:
            raise NotFound(f"no native container with id {id!r}")
        return config, records.read_json(str(self.dir / id / records.STATE)) or {"status": "created"}

    def ids(self) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self.dir) if _ID.fullmatch(e.name))
        except FileNotFoundError:
            return []

    def view(self, config: dict, state: dict) -> Container:
        status = State(state.get("status", "created"))
        exit_code = state.get("exit_code")
        if status is State.RUNNING:
            if not lifecycle.supervised(state):
                status, exit_code = State.EXITED, exit_code if state.get("finished_at") else UNKNOWN_EXIT
            elif self.cgroup(config["id"]).frozen():
                status = State.PAUSED
        running = status in (State.RUNNING, State.PAUSED)
        return Container(
            id=config["id"], name=config["name"], namespace=config["namespace"], runtime=RUNTIME,
            image=config["image"], state=status, labels=dict(config["labels"]),
            exit_code=None if running or status is State.CREATED else exit_code,
            pid=(state.get("init") or {}).get("pid") if running else None,
            ip=(config.get("net") or {}).get("ip"), oom_killed=bool(state.get("oom_killed")),
            restarts=state.get("restart_count", 0),
            ports=tuple(Port(p["container_port"], p["host_port"], p["protocol"], p["host_ip"])
                        for p in (config.get("net") or {}).get("ports") or ()),
            created_at=config["created_at"],
            started_at=state.get("started_at"), finished_at=None if running else state.get("finished_at"),
            log_lines_dropped=state.get("log_lines_dropped", 0),
        )

    def event(self, config: dict, action: str, state: State | None = None, exit_code: int | None = None) -> None:
        records.append_event(str(self.root), {
            "id": config["id"], "name": config["name"], "namespace": config["namespace"], "action": action,
            "state": str(state) if state else None, "exit_code": exit_code,
        })

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        private_dir(self.root)  # tightens an older orchestr's 0755 ones
        private_dir(self.dir)
        with open(self.root / "containers.lock", "w", opener=private) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    async def inspect(self, id: str) -> Container:
        return self.view(*self.load(id))

    async def list(self, namespace: str | None = None) -> list[Container]:
        out = []
        for id in self.ids():
            try:
                container = self.view(*self.load(id))
            except NotFound:
                continue  # deleted meanwhile, or still being created
            if namespace is None or container.labels.get(L_NAMESPACE, container.namespace) == namespace:
                out.append(container)
        return out

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
        return self.view(config, state).state not in (State.RUNNING, State.PAUSED) and not lifecycle.supervised(state)

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

    def run(self, spec: ContainerSpec, output: Callable[[LogLine], None] | None = None,
            remove: bool = False, stdin: int | None = None, on_signal: str | None = None) -> tuple[Container, int]:
        """A one-off container run to its end, blocking: see run.run."""
        return run.run(self, spec, output, remove, stdin, on_signal)

    def supervisor_pids(self) -> list[int]:
        """The supervisor's processes of this state dir when it runs, its keeper (when it has one) first, then
        its worker (for measuring what supervision costs)."""
        reply = self.supervisor.ask({"op": "ping"})
        return [pid for pid in (reply.get("keeper"), reply["pid"]) if pid] if reply else []
