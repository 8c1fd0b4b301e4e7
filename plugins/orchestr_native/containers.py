"""The native runtime's containers: every container verb, with records on disk and one supervisor process."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import os
import re
import shutil
import signal as signals
import struct
import termios
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio

from orchestr.config import Config, private, private_dir
from orchestr.containers import UNKNOWN_EXIT, rfc3339, volume_key, volumes
from orchestr.containers import argv as resolve_argv
from orchestr.errors import Conflict, Interrupted, NotFound, OrchestrError, RuntimeFailure, TerminalFailure, Timeout
from orchestr.model import (
    EXEC_OUTPUT_LIMIT,
    L_NAMESPACE,
    Container,
    ContainerSpec,
    Event,
    EventAction,
    ExecResult,
    LogLine,
    Port,
    Resources,
    State,
    Stats,
)
from orchestr.runtime import ExecOutput

from . import cgroups, logs, steps
from .process import linux
from .supervisor import records
from .supervisor.client import SupervisorClient, command

if TYPE_CHECKING:
    from .network import Network

RUNTIME = "native"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MiB = 1 << 20
EXEC_GRACE = 5.0  # seconds past an exec's deadline before orchestr stops waiting for its output to end
_ID = re.compile(r"[0-9a-f]{64}")
_POLL = 0.05


def _polls(ceiling: float = _POLL) -> Iterator[float]:
    """Poll intervals: a millisecond for the first ten, since short-lived containers end within milliseconds
    (and doubling from there would add up to as much again), then doubling up to ceiling."""
    yield from [0.001] * 10
    delay = 0.002
    while True:
        yield delay
        delay = min(delay * 2, ceiling)


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
        self._root = Path(config.state_dir) / "native"
        self._dir = self._root / "containers"
        self._volumes = self._root / "volumes"
        self._store = store
        self._log = {"max_size": log_max_size, "max_files": log_max_files}
        self._start_timeout = start_timeout  # for a container's first process to exec its command
        self._supervisor = SupervisorClient(str(self._root))
        self._cgroup_version = cgroups.version()

    @functools.cached_property
    def _network(self) -> Network:
        from .network import Network  # loads only for containers that have a bridge network, and for sweeps

        return Network(self._root)

    # -- records ------------------------------------------------------------------------

    def _cgroup(self, id: str) -> cgroups.Manager:
        return cgroups.manager(id, cgroup_version=self._cgroup_version)

    def _load(self, id: str) -> tuple[dict, dict]:
        config = records.read_json(str(self._dir / id / records.CONFIG)) if _ID.fullmatch(id) else None
        if config is None:
            raise NotFound(f"no native container with id {id!r}")
        return config, records.read_json(str(self._dir / id / records.STATE)) or {"status": "created"}

    def _ids(self) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self._dir) if _ID.fullmatch(e.name))
        except FileNotFoundError:
            return []

    def _view(self, config: dict, state: dict) -> Container:
        status = State(state.get("status", "created"))
        exit_code = state.get("exit_code")
        if status is State.RUNNING:
            if not _supervised(state):
                status, exit_code = State.EXITED, exit_code if state.get("finished_at") else UNKNOWN_EXIT
            elif self._cgroup(config["id"]).frozen():
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

    def _event(self, config: dict, action: str, state: State | None = None, exit_code: int | None = None) -> None:
        records.append_event(str(self._root), {
            "id": config["id"], "name": config["name"], "namespace": config["namespace"], "action": action,
            "state": str(state) if state else None, "exit_code": exit_code,
        })

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        private_dir(self._root)  # tightens an older orchestr's 0755 ones
        private_dir(self._dir)
        with open(self._root / "containers.lock", "w", opener=private) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # -- create -------------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> Container:
        return await anyio.to_thread.run_sync(self._create, spec)

    def _create(self, spec: ContainerSpec) -> Container:
        if spec.network not in ("bridge", "host", "none"):
            raise RuntimeFailure(f"container {spec.name}: unknown network {spec.network!r}; use bridge, host or none")
        with self._lock():
            for id in self._ids():
                other = records.read_json(str(self._dir / id / records.CONFIG))
                if other and (other["namespace"], other["name"]) == (spec.namespace, spec.name):
                    raise Conflict(f"container name {spec.name!r} is already in use in namespace {spec.namespace!r}")
            image_id = self._store.resolve(spec.image)
            image = (self._store.image_config(image_id) or {}).get("config") or {}
            layers = [str(p) for p in self._store.layer_paths(image_id)]
            process = _process(spec, image)
            mounts = [self._volume(spec, v) for v in volumes(spec)]
            id = os.urandom(32).hex()
            d = self._dir / id
            d.mkdir(mode=0o700)
            for sub in ("upper", "work", "rootfs"):  # as the container's / shows them; d keeps others out
                (d / sub).mkdir(mode=0o755)
            files = {"/etc/hostname": d / "hostname", "/etc/hosts": d / "hosts"}
            files["/etc/hostname"].write_text(f"{spec.name}\n")
            files["/etc/hosts"].write_text(f"127.0.0.1\tlocalhost {spec.name}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
            if spec.network == "host" and os.path.exists("/etc/resolv.conf"):
                files["/etc/resolv.conf"] = d / "resolv.conf"
                shutil.copyfile("/etc/resolv.conf", files["/etc/resolv.conf"])
            net = None
            if spec.network == "bridge":  # writes hosts and resolv.conf; raises before any change on a taken port
                try:
                    net = self._network.attach(id, spec, d)
                except BaseException:
                    shutil.rmtree(d)
                    raise
                files["/etc/resolv.conf"] = d / "resolv.conf"
            config = {
                "id": id, "name": spec.name, "namespace": spec.namespace, "image": spec.image,
                "image_id": image_id, "labels": dict(spec.labels), "created_at": rfc3339(),
                "hostname": spec.name, "network": spec.network, "net": net, "process": process, "tty": spec.tty,
                "rootfs": {"layers": layers, "upper": str(d / "upper"), "work": str(d / "work"),
                           "merged": str(d / "rootfs"), "read_only": spec.read_only},
                "mounts": mounts, "files": {k: str(v) for k, v in files.items()},
                "resources": dataclasses.asdict(spec.resources),
                "restart_policy": str(spec.restart_policy), "stop_grace_period": spec.stop_grace_period,
                "log": self._log, "cgroup_version": self._cgroup_version, "start_timeout": self._start_timeout,
            }
            records.write_json(str(d / records.CONFIG), config)  # no state.json yet: _load reads that as created
            try:
                self._cgroup(id).create(spec.resources)
            except OSError as e:
                self._cgroup(id).remove()
                if net:
                    self._network.detach(config)
                shutil.rmtree(d)
                raise RuntimeFailure(f"container {spec.name}: cannot set up its cgroup: {e}") from None
        self._event(config, "create", State.CREATED)
        return self._view(config, {"status": "created"})

    def _volume(self, spec: ContainerSpec, v) -> dict:
        """The mount of a volume orchestr.containers.volumes has checked (its target normalised, its bind source
        resolved)."""
        if v.target == "/proc" or v.target.startswith("/proc/"):
            raise TerminalFailure(f"container {spec.name}: volume {v.target!r}: nothing may be mounted over or "
                                  "inside /proc")
        if v.type == "tmpfs":
            return {"type": "tmpfs", "source": None, "target": v.target, "read_only": v.read_only,
                    "size": v.tmpfs_size}
        source = v.source
        if v.type == "volume":
            source = str(private_dir(self._volumes) / volume_key(spec.namespace, v.source))
            os.makedirs(source, 0o755, exist_ok=True)  # as the container sees it; volumes/ keeps others out
        return {"type": v.type, "source": source, "target": v.target, "read_only": v.read_only,
                "allow_host_root": v.allow_host_root}

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self, id: str) -> None:
        await steps.drive(self._start_steps(id))

    def _start_steps(self, id: str) -> steps.Steps[None]:
        config, state = self._load(id)
        if _supervised(state):
            if not (self._dir / id / records.STOP).exists():
                return  # running, paused, or waiting to be restarted by the supervisor
            yield from self._wait_unsupervised(id, 10.0)  # a stop is under way: let it finish
        elif state.get("supervised"):  # its supervisor died: end what the last run left before a new one
            yield functools.partial(self._end_orphan, id)
        yield functools.partial(self._start, config)

    def _start(self, config: dict, stdin: int | None = None, attach: bool = False,
               winsize: list[int] | None = None) -> int | None:
        """Has the supervisor start the container; stdin, when given, becomes its standard input. With attach,
        a tty container's terminal, winsize (rows, columns) big, is returned (the caller relays it) instead of
        being logged."""
        d = self._dir / config["id"]
        cgroup = self._cgroup(config["id"])
        try:
            if not cgroup.exists():  # made at create; gone after a reboot
                cgroup.create(_resources(config))
        except OSError as e:
            raise RuntimeFailure(f"container {config['name']}: cannot set up its cgroup: {e}") from None
        if config.get("net"):
            self._network.ensure(config)  # a reboot or a hand may have taken the namespace or the bridge
        (d / records.STOP).unlink(missing_ok=True)
        request = {"op": "start", "dir": str(d), "stdin": stdin is not None, "attach": attach, "winsize": winsize}
        try:
            # answered once the start is settled: at worst when the supervisor gives it up, after start_timeout
            timeout = float(config.get("start_timeout") or 30.0) + 30.0
            reply = self._supervisor.request(request, timeout, fds=[stdin] if stdin is not None else [])
        except (OSError, EOFError) as e:
            raise RuntimeFailure(f"container {config['name']}: the supervisor failed: {e}") from None
        if "error" in reply:
            raise RuntimeFailure(f"container {config['name']}: {reply['error']}")
        if (stdin is not None or attach) and not reply.get("io"):
            # a supervisor from before -i and -t, still looking after containers an older orchestr started
            raise RuntimeFailure(f"container {config['name']}: this state dir's supervisor is older than orchestr "
                                 "and cannot pass a standard input or a terminal; it exits once it supervises "
                                 "nothing for a minute")
        return reply.get("fd")

    async def stop(self, id: str, *, signal: str = "SIGTERM", timeout: float = 10.0) -> None:
        await steps.drive(self._stop_steps(id, signal, timeout))

    def _stop_steps(self, id: str, signal: str, timeout: float) -> steps.Steps[None]:
        config, state = self._load(id)
        if not _supervised(state):
            if state.get("supervised"):  # its supervisor died: what it left runs on unless ended here
                yield functools.partial(self._end_orphan, id)
            return
        sig = _signal(signal)
        d = self._dir / id
        (d / records.STOP).touch(0o600)
        if state.get("status") == "running":
            self._event(config, "stop")
            cgroup = self._cgroup(id)
            _kill(state.get("init"), sig)
            if cgroup.frozen():
                cgroup.thaw()  # a frozen process cannot act on the signal
            if not (yield from self._wait_unsupervised(id, timeout)):
                _kill(state.get("init"), signals.SIGKILL)
                yield cgroup.kill_all
        else:  # exited, waiting for a restart
            yield functools.partial(self._supervisor.ask, {"op": "cancel-restart", "dir": str(d)})
        if not (yield from self._wait_unsupervised(id, 30.0)):
            raise RuntimeFailure(f"container {config['name']}: the supervisor did not record its end after the stop")

    def _wait_unsupervised(self, id: str, timeout: float) -> steps.Steps[bool]:
        """Waits until the supervisor has recorded the container's end for good; False on timeout."""
        deadline = time.monotonic() + timeout
        for delay in _polls():
            if not _supervised(self._load(id)[1]):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            yield min(delay, left)
        return False  # never reached: the polls go on for ever

    async def delete(self, id: str, *, force: bool = False) -> None:
        await steps.drive(self._delete_steps(id, force))

    def _delete_steps(self, id: str, force: bool) -> steps.Steps[None]:
        config, state = self._load(id)
        current = self._view(config, state).state
        if current in (State.RUNNING, State.PAUSED) and not force:
            raise Conflict(f"container {config['name']} is {current}; stop it first or delete with force")
        yield from self._stop_steps(id, "SIGKILL", 5.0)
        yield functools.partial(self._destroy, config)
        self._event(config, "destroy")

    def _destroy(self, config: dict) -> None:
        d = self._dir / config["id"]
        _unmount_under(str(d))
        try:
            self._cgroup(config["id"]).remove()
        except (OSError, TimeoutError) as e:
            raise RuntimeFailure(f"container {config['name']}: cannot remove its cgroup: {e}") from None
        if config.get("net"):
            try:
                self._network.detach(config)
            except OSError as e:
                raise RuntimeFailure(f"container {config['name']}: cannot remove its network: {e}") from None
        shutil.rmtree(d, ignore_errors=True)

    async def pause(self, id: str) -> None:
        config, state = self._load(id)
        if self._view(config, state).state is not State.RUNNING:
            raise Conflict(f"container {config['name']} is not running")
        try:
            await anyio.to_thread.run_sync(self._cgroup(id).freeze)
        except (OSError, TimeoutError) as e:
            raise RuntimeFailure(f"container {config['name']}: cannot pause: {e}") from None
        self._event(config, "pause", State.PAUSED)

    async def resume(self, id: str) -> None:
        config, state = self._load(id)
        if self._view(config, state).state is not State.PAUSED:
            raise Conflict(f"container {config['name']} is not paused")
        await anyio.to_thread.run_sync(self._cgroup(id).thaw)
        self._event(config, "unpause", State.RUNNING)

    async def signal(self, id: str, signal: str) -> None:
        config, state = self._load(id)
        current = self._view(config, state).state
        if current is not State.RUNNING:
            raise Conflict(f"container {config['name']} is {current}; a signal needs a running container")
        _kill(state.get("init"), _signal(signal))

    async def stats(self, id: str) -> Stats:
        config, state = self._load(id)
        current = self._view(config, state)
        if current.state not in (State.RUNNING, State.PAUSED):
            raise Conflict(f"container {config['name']} is {current.state}; stats need a running container")
        try:
            usage = self._cgroup(id).usage()
        except FileNotFoundError:  # ended and cleaned meanwhile
            raise Conflict(f"container {config['name']} is no longer running") from None
        net = None
        if config["network"] == "bridge" and current.pid:  # a namespace of its own, with a link to count
            from .network import netns

            net = netns.counters(current.pid)
        return Stats(
            cpu_seconds=usage["cpu_ns"] / 1e9 if usage["cpu_ns"] is not None else None,
            memory=usage["memory"], memory_limit=usage["memory_limit"], pids=usage["pids"],
            net_rx=net[0] if net else None, net_tx=net[1] if net else None,
            block_read=usage["block_read"], block_write=usage["block_write"], time=rfc3339(),
        )

    async def update(self, id: str, resources: Resources) -> None:
        await anyio.to_thread.run_sync(self._update, id, resources)

    def _update(self, id: str, resources: Resources) -> None:
        with self._lock():
            config, _ = self._load(id)
            old = _resources(config)
            merged = Resources(*(n if n is not None else o for o, n in
                                 zip(dataclasses.astuple(old), dataclasses.astuple(resources))))
            try:
                self._cgroup(id).create(merged)  # writes the limits into the existing cgroup
            except OSError as e:
                raise RuntimeFailure(f"container {config['name']}: cannot update its limits: {e}") from None
            config.pop("limits", None)  # an older orchestr's name for them
            config["resources"] = dataclasses.asdict(merged)  # for the cgroup made again at a start after a reboot
            records.write_json(str(self._dir / id / records.CONFIG), config)

    async def inspect(self, id: str) -> Container:
        return self._view(*self._load(id))

    async def list(self, namespace: str | None = None) -> list[Container]:
        out = []
        for id in self._ids():
            try:
                container = self._view(*self._load(id))
            except NotFound:
                continue  # deleted meanwhile, or still being created
            if namespace is None or container.labels.get(L_NAMESPACE, container.namespace) == namespace:
                out.append(container)
        return out

    async def wait(self, id: str) -> int:
        return await steps.drive(self._wait_steps(id))

    def _wait_steps(self, id: str) -> steps.Steps[int]:
        first = self._view(*self._load(id))
        if first.state is State.EXITED:
            return first.exit_code if first.exit_code is not None else UNKNOWN_EXIT
        for delay in _polls():
            yield delay
            now = self._view(*self._load(id))
            # a restart can come and go between two looks: a new start time means the run we waited for ended
            ended = first.state is not State.CREATED and now.started_at != first.started_at
            if now.state is State.EXITED or ended:
                _, state = self._load(id)
                code = state.get("exit_code")
                return code if code is not None else UNKNOWN_EXIT
        return UNKNOWN_EXIT  # never reached: the polls go on for ever

    def uses_image(self, image_id: str) -> bool:
        """Whether any container, whatever its state, was created from image_id."""
        for id in self._ids():
            config = records.read_json(str(self._dir / id / records.CONFIG))
            if config and config["image_id"] == image_id:
                return True
        return False

    # -- exec, logs, events -------------------------------------------------------------

    async def exec(
        self, id: str, argv: Sequence[str], *, env: dict[str, str] | None = None, user: str | None = None,
        workdir: str | None = None, timeout: float | None = None, output: Callable[[LogLine], None] | None = None,
        output_limit: int = EXEC_OUTPUT_LIMIT,
    ) -> ExecResult:
        config, state = self._load(id)
        current = self._view(config, state).state
        if current is not State.RUNNING:
            raise Conflict(f"container {config['name']} is {current}; exec needs a running container")
        if not argv:
            raise RuntimeFailure(f"container {config['name']}: exec needs a command")
        request = {"argv": list(argv), "env": env or {}, "user": user, "cwd": workdir, "timeout": timeout}
        collected = ExecOutput(output, output_limit)  # handed on as it comes, or kept up to output_limit
        code = None
        # the helper kills the command at the deadline; past it and a grace, stop waiting for output regardless
        with anyio.move_on_after(None if timeout is None else timeout + EXEC_GRACE) as backstop:
            async with await anyio.open_process(command("exec", str(self._dir / id))) as proc:
                await proc.stdin.send(json.dumps(request).encode())
                await proc.stdin.aclose()

                async def pump(stream: anyio.abc.ByteReceiveStream, name: str) -> None:
                    async for data in stream:
                        collected.add(name, data)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(pump, proc.stdout, "stdout")
                    tg.start_soon(pump, proc.stderr, "stderr")
                code = await proc.wait()
        if timeout is not None and (backstop.cancelled_caught or code == -signals.SIGALRM):
            # dying of SIGALRM is how the helper says the command ran past the deadline
            raise Timeout(f"container {config['name']}: {argv[0]} ran past its {timeout:g}s deadline and was "
                          "killed", runtime=RUNTIME, container=id)
        return collected.result(code)

    def logs(self, id: str, *, follow: bool = False, tail: int | None = None) -> AsyncIterator[LogLine]:
        return steps.stream(self._log_steps(id, follow, tail))

    def _log_steps(self, id: str, follow: bool, tail: int | None) -> steps.Steps[None]:
        """Yields the container's LogLines; when following, until it has ended and its output is all read."""
        self._load(id)
        path = str(self._dir / id / logs.FILE)
        history: list[bytes] = []
        for old in logs.files(path)[:-1]:
            with open(old, "rb") as f:
                history.extend(f.read().splitlines())
        try:
            current = open(path, "rb")
        except FileNotFoundError:
            current = None
        with contextlib.ExitStack() as stack:
            if current is not None:
                stack.enter_context(current)
                data = current.read()
                cut = data.rfind(b"\n") + 1
                history.extend(data[:cut].splitlines())
                partial = data[cut:]
            else:
                partial = b""
            if tail is not None:
                history = history[-tail:] if tail > 0 else []
            for raw in history:
                if line := _log_line(raw):
                    yield line
            if not follow:
                return
            delays = _polls(0.1)
            while True:
                data = current.read() if current is not None else b""
                if data:
                    delays = _polls(0.1)  # more output, or the end, tends to follow soon
                    data, partial = partial + data, b""
                    cut = data.rfind(b"\n") + 1
                    partial = data[cut:]
                    for raw in data[:cut].splitlines():
                        if line := _log_line(raw):
                            yield line
                    continue
                try:
                    rotated = current is None or os.stat(path).st_ino != os.fstat(current.fileno()).st_ino
                except FileNotFoundError:
                    rotated = False
                if rotated:
                    current = stack.enter_context(open(path, "rb"))
                    partial = b""
                    continue
                try:
                    config, state = self._load(id)
                except NotFound:
                    return
                if self._view(config, state).state not in (State.RUNNING, State.PAUSED) and not _supervised(state):
                    if current is not None and (rest := current.read()):
                        for raw in (partial + rest).splitlines():
                            if line := _log_line(raw):
                                yield line
                    return
                yield next(delays)

    def events(self) -> AsyncIterator[Event]:
        """Events from the moment of this call, not of the first iteration: a caller can subscribe, then act."""
        path = self._root / records.EVENTS
        private_dir(self._root)
        path.touch(0o600)
        info = os.stat(path)
        return self._events(path, info.st_ino, info.st_size)

    async def _events(self, path: Path, inode: int, offset: int) -> AsyncIterator[Event]:
        f = open(path, "rb")
        try:
            if os.fstat(f.fileno()).st_ino == inode:  # else rotated meanwhile: all of the new file is news
                f.seek(offset)
            partial = b""
            while True:
                data = f.read()
                if data:
                    data, partial = partial + data, b""
                    cut = data.rfind(b"\n") + 1
                    partial = data[cut:]
                    for raw in data[:cut].splitlines():
                        if event := _event(raw):
                            yield event
                    continue
                try:
                    if os.stat(path).st_ino != os.fstat(f.fileno()).st_ino:
                        f.close()
                        f = open(path, "rb")
                        partial = b""
                        continue
                except FileNotFoundError:
                    pass
                await anyio.sleep(0.1)
        finally:
            f.close()

    # -- re-attach and close ------------------------------------------------------------

    async def reattach(self) -> list[Container]:
        return await anyio.to_thread.run_sync(self._reattach)

    def _reattach(self) -> list[Container]:
        live = []
        with self._lock():
            for id in self._ids():
                d = self._dir / id
                config = records.read_json(str(d / records.CONFIG))
                if config is None:  # a create that died half-way: nothing else refers to it
                    shutil.rmtree(d, ignore_errors=True)
                    continue
                state = records.read_json(str(d / records.STATE)) or {"status": "created"}
                if _supervised(state):
                    live.append(self._view(config, state))
                    continue
                if state.get("supervised"):
                    self._end_unsupervised(config, state)
            self._network.sweep()
        return live

    def _end_orphan(self, id: str) -> None:
        """Ends one container whose supervisor is gone, unless another process has meanwhile."""
        with self._lock():
            config, state = self._load(id)
            if state.get("supervised") and not _supervised(state):
                self._end_unsupervised(config, state)

    def _end_unsupervised(self, config: dict, state: dict) -> None:
        """The supervisor is gone (crash, kill or reboot): whatever it left runs unsupervised; end it.
        Called with the lock held."""
        d = self._dir / config["id"]
        _unmount_under(str(d))
        cgroup = self._cgroup(config["id"])
        if cgroup.exists():
            cgroup.kill_all()
        (d / records.STOP).unlink(missing_ok=True)
        was_running = state.get("status") == "running"
        if was_running:
            state.update(status="exited", exit_code=UNKNOWN_EXIT, finished_at=rfc3339())
        state["supervised"] = False
        records.write_json(str(d / records.STATE), state)
        if was_running:
            self._event(config, "die", State.EXITED, UNKNOWN_EXIT)

    # -- a one-off container, blocking -------------------------------------------------

    def run(self, spec: ContainerSpec, output: Callable[[LogLine], None] | None = None,
            remove: bool = False, stdin: int | None = None, on_signal: str | None = None) -> tuple[Container, int]:
        """Creates and starts a container, hands its output to output as it comes, and returns it with its exit
        code once it has ended; removes it afterwards when remove is set, also when interrupted.

        With spec.interactive, stdin (an fd) is the container's standard input. With spec.tty, the container
        gets a terminal of its own, which this relays: stdin to it, its output to output (as stdout; a
        terminal merges the two streams), and its window size from stdin when that is a terminal too. Such a
        run's output is not logged.

        on_signal, in the main thread, takes over SIGTERM, SIGHUP and SIGINT while the container runs; those
        ignored when the run began (nohup, a shell's background job) stay ignored. "forward" passes each on to
        the container, killed if it has not ended its stop grace period later. Its init drops a signal it has
        no handler for (it is the init of a pid namespace): such a container is killed at once, and the exit
        code given is 128 + the signal, as if the signal had ended it. "leave" stops waiting and raises
        Interrupted: the container goes on running, or with remove is stopped and removed."""
        with _Relay(on_signal) as relay:
            container = self._create(spec)
            try:
                return self._run(container, spec, output, stdin, relay)
            except Interrupted as e:
                if remove:
                    steps.drive_blocking(self._stop_steps(container.id, "SIGTERM", spec.stop_grace_period))
                what = "was stopped and removed" if remove else "goes on running"
                raise Interrupted(e.signal, f"{signals.Signals(e.signal).name}: container {spec.name} {what}") from None
            finally:
                relay.close()
                if remove:
                    steps.drive_blocking(self._delete_steps(container.id, True))

    def _run(self, container: Container, spec: ContainerSpec, output: Callable[[LogLine], None] | None,
             stdin: int | None, relay: _Relay) -> tuple[Container, int]:
        """run(), from the container made to its end."""
        stdin = stdin if spec.interactive else None
        config, _ = self._load(container.id)
        forward = functools.partial(self._forward, container.id, spec.stop_grace_period, relay)
        if spec.tty:
            terminal = self._start(config, attach=True, winsize=_winsize(stdin))
            try:
                relay.attach(forward)
            except BaseException:
                os.close(terminal)
                raise
            _relay(terminal, stdin, output)
        else:
            with _feeding(stdin) as pipe:  # fed until the container has ended
                self._start(config, pipe)
                relay.attach(forward)
                if output is not None:
                    for line in steps.stream_blocking(self._log_steps(container.id, True, None)):
                        output(line)
        code = steps.drive_blocking(self._wait_steps(container.id))
        if relay.ended_at_once is not None and code == 128 + signals.SIGKILL:
            code = 128 + relay.ended_at_once
        return self._view(*self._load(container.id)), code

    def _forward(self, id: str, grace: float, relay: _Relay, sig: int) -> None:
        """Passes sig on to the container's init and has it killed if it has not ended grace seconds later. An
        init without a handler for sig is killed at once: as the init of a pid namespace it would drop sig."""
        init = self._load(id)[1].get("init")
        if not records.alive(init):
            return
        if _catches(init["pid"], sig):
            _kill(init, sig)
            relay.after(grace, functools.partial(_kill, init, signals.SIGKILL))
        else:
            relay.ended_at_once = relay.ended_at_once or sig
            _kill(init, signals.SIGKILL)

    def supervisor_pids(self) -> list[int]:
        """The supervisor's processes of this state dir when it runs, its keeper (when it has one) first, then
        its worker (for measuring what supervision costs)."""
        reply = self._supervisor.ask({"op": "ping"})
        return [pid for pid in (reply.get("keeper"), reply["pid"]) if pid] if reply else []


def _process(spec: ContainerSpec, image: dict) -> dict:
    command = resolve_argv(spec, image.get("Entrypoint"), image.get("Cmd"))
    env = {"PATH": DEFAULT_PATH}
    for item in image.get("Env") or []:
        key, _, value = item.partition("=")
        env[key] = value
    env.update(spec.env)
    env["HOSTNAME"] = spec.name
    return {"argv": command, "env": env, "cwd": spec.working_dir or image.get("WorkingDir") or "/",
            "user": spec.user or image.get("User") or "", "init": spec.init, "seccomp": spec.seccomp != "unconfined"}


def _resources(config: dict) -> Resources:
    """The container's limits; an orchestr from before "resources" kept them under "limits", in the same shape."""
    return Resources(**(config["resources"] if "resources" in config else config["limits"]))


def _winsize(fd: int | None) -> list[int] | None:
    """(rows, columns) of the terminal fd, None when it is none."""
    if fd is None or not os.isatty(fd):
        return None
    size = os.get_terminal_size(fd)
    return [size.lines, size.columns]


@contextlib.contextmanager
def _feeding(stdin: int | None) -> Iterator[int | None]:
    """The read end of a pipe that a thread fills from stdin, for the container's standard input; None for
    None. The container never holds the caller's own file: through /proc/self/fd/0 it could reopen it for
    writing, and a terminal would stay readable to it after the run."""
    if stdin is None:
        yield None
        return
    import select
    import threading

    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    stop_r, stop_w = os.pipe2(os.O_CLOEXEC)

    def feed() -> None:
        poller = select.poll()
        poller.register(stdin, select.POLLIN)
        poller.register(stop_r, select.POLLIN)
        try:
            while stop_r not in {fd for fd, _ in poller.poll()}:
                data = os.read(stdin, 65536)
                if not data:
                    return
                view = memoryview(data)
                while view:
                    view = view[os.write(write_end, view):]
        except OSError:  # EPIPE: the container is gone, or closed its stdin
            return
        finally:
            os.close(write_end)
            os.close(stop_r)

    feeder = threading.Thread(target=feed, name="orchestr-stdin", daemon=True)
    feeder.start()
    try:
        yield read_end
    finally:
        os.close(read_end)  # the container's copies are gone with it: a write blocked on a full pipe ends
        with contextlib.suppress(BrokenPipeError):  # the feeder has ended already, at the end of stdin
            os.write(stop_w, b"x")
        feeder.join(timeout=5)
        os.close(stop_w)


def _relay(terminal: int, stdin: int | None, output: Callable[[LogLine], None] | None) -> None:
    """Copies stdin to the container's terminal and the terminal's output to output, until the container
    has closed it; follows stdin's window size meanwhile. Input waits in a queue while the terminal takes
    none, so a container that neither reads nor has its output read cannot stall the relay. The end of
    stdin is passed on as the terminal's end-of-file character (twice after a partial line, as typing it
    would need). Closes terminal."""
    import select

    def resized(*_) -> None:
        if (size := _winsize(stdin)) is not None:
            fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))

    watching = stdin is not None and os.isatty(stdin)
    previous = signals.signal(signals.SIGWINCH, resized) if watching else None
    os.set_blocking(terminal, False)
    pending, last = b"", b"\n"
    reading = stdin is not None
    poller = select.poll()
    try:
        while True:
            room = len(pending) < (1 << 20)  # past that, stdin waits until the terminal takes some
            poller.register(terminal, select.POLLIN | (select.POLLOUT if pending else 0))
            if reading:
                poller.register(stdin, select.POLLIN if room else 0)
            events = dict(poller.poll())
            if events.get(terminal, 0) & select.POLLOUT:
                try:
                    pending = pending[os.write(terminal, pending):]
                except BlockingIOError:
                    pass
            if reading and room and events.get(stdin, 0):
                try:
                    data = os.read(stdin, 65536)
                except OSError:
                    data = b""
                if data:
                    pending, last = pending + data, data[-1:]
                else:  # the end of input: end-of-file for whatever reads the terminal
                    reading = False
                    poller.unregister(stdin)
                    eof = termios.tcgetattr(terminal)[6][termios.VEOF]
                    if eof != b"\0":
                        pending += eof if last in (b"\n", eof) else eof * 2
            if events.get(terminal, 0) & (select.POLLIN | select.POLLHUP | select.POLLERR):
                try:
                    data = os.read(terminal, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""  # EIO: every process of the container has closed it
                if not data:
                    return
                if output is not None:
                    output(LogLine(stream="stdout", data=data))
    finally:
        if watching:
            signals.signal(signals.SIGWINCH, previous)
        os.close(terminal)


class _Relay:
    """run()'s hold on SIGTERM, SIGHUP and SIGINT while a one-off container runs in the foreground (see run);
    a signal that arrives before the container has started waits for it."""

    SIGNALS = (signals.SIGTERM, signals.SIGHUP, signals.SIGINT)

    def __init__(self, mode: str | None) -> None:
        if mode not in (None, "forward", "leave"):
            raise ValueError(f"on_signal must be None, 'forward' or 'leave', not {mode!r}")
        self.mode = mode
        self.previous: dict[int, object] = {}
        self.pending: list[int] = []
        self.target: Callable[[int], None] | None = None
        self.ended_at_once: int | None = None  # the signal the container was killed at once for
        self.timer: threading.Timer | None = None
        self.interrupted = False
        self.closed = False

    def __enter__(self) -> _Relay:
        if self.mode is not None and threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                if signals.getsignal(sig) is not signals.SIG_IGN:  # nohup's or a background job's: stays so
                    self.previous[sig] = signals.signal(sig, self._caught)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        for sig, handler in self.previous.items():
            signals.signal(sig, signals.SIG_DFL if handler is None else handler)

    def _caught(self, sig: int, frame: object) -> None:
        if self.closed:
            return
        if self.target is None:
            self.pending.append(sig)
        else:
            self._deliver(sig)

    def _deliver(self, sig: int) -> None:
        if self.mode == "forward" and self.target is not None:
            try:
                self.target(sig)
            except (OSError, OrchestrError):  # gone meanwhile: nothing left to pass it to
                pass
        elif self.mode == "leave" and not self.interrupted:  # once: a second signal must not cut short the first's
            self.interrupted = True
            raise Interrupted(sig, signals.Signals(sig).name)

    def attach(self, target: Callable[[int], None]) -> None:
        """Signals go to target from now on, those that came before first."""
        self.target = target
        pending, self.pending = self.pending, []
        for sig in pending:
            self._deliver(sig)

    def after(self, seconds: float, then: Callable[[], None]) -> None:
        """Calls then in seconds, unless closed before; only the first such call counts."""
        if self.timer is None:
            self.timer = threading.Timer(seconds, then)
            self.timer.daemon = True
            self.timer.start()

    def close(self) -> None:
        """Signals from now on are dropped (the run is ending), and a pending kill with them."""
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()


def _catches(pid: int, sig: int) -> bool:
    """Whether process pid has a handler for sig."""
    try:
        with open(f"/proc/{pid}/status") as f:
            caught = next(line.split()[1] for line in f if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(int(caught, 16) >> (sig - 1) & 1)


def _supervised(state: dict) -> bool:
    """Whether a live supervisor still looks after the container (running, or waiting to restart it)."""
    return bool(state.get("supervised")) and records.alive(state.get("supervisor"))


def _signal(name: str) -> int:
    text = str(name).upper()
    if text.isdigit():
        return int(text)
    try:
        return int(signals.Signals[text if text.startswith("SIG") else f"SIG{text}"])
    except KeyError:
        raise TerminalFailure(f"unknown signal {name!r}; expected a name such as SIGTERM or a number") from None


def _kill(ident: dict | None, sig: int) -> None:
    if records.alive(ident):
        with contextlib.suppress(ProcessLookupError):
            os.kill(ident["pid"], sig)


def _unmount_under(directory: str) -> None:
    """Detaches every mount at or below directory in this mount namespace, deepest first."""
    prefix = directory.rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        table = f.read()
    # mountinfo escapes these four as octal; nearly always nothing is mounted there, and this says so at once
    escaped = directory.rstrip("/").translate({92: "\\134", 32: "\\040", 9: "\\011", 10: "\\012"})
    if escaped not in table:
        return
    points = []
    for line in table.splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point.startswith(prefix) or point == directory:
            points.append(point)
    for point in sorted(points, key=len, reverse=True):
        with contextlib.suppress(OSError):
            linux.umount(point, linux.MNT_DETACH)


def _log_line(raw: bytes) -> LogLine | None:
    parsed = logs.parse(raw)
    return LogLine(stream=parsed[0], data=parsed[1], time=parsed[2]) if parsed else None


def _event(raw: bytes) -> Event | None:
    try:
        e = json.loads(raw)
        return Event(runtime=RUNTIME, id=e["id"], name=e["name"], namespace=e["namespace"],
                     action=EventAction(e["action"]),
                     state=State(e["state"]) if e.get("state") else None, exit_code=e.get("exit_code"),
                     time=e.get("time"))
    except (ValueError, KeyError):
        return None
