"""The containerd runtime: orchestr's verbs carried out by containerd 1.6 over its own gRPC API.

Every orchestr container is a containerd container in one containerd namespace (`orchestr`, see client.py) carrying
orchestr's ownership labels, with a snapshot of its own over its image's layers; a start makes a task (runc through
containerd's shim), whose output goes to orchestr's logger (logger.py) through the shim's `binary://` URI, so the
log keeps being written while no orchestr process runs. A task that ended stays until the next start or the delete,
so its exit code can be read back. What orchestr keeps for itself rides in labels under INTERNAL, never reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import resource
import shutil
import signal as signals
import stat
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import orchestr
from orchestr import logfile
from orchestr.config import Config, private_dir
from orchestr.containers import UNKNOWN_EXIT, rfc3339, volume_key, volumes
from orchestr.errors import Conflict, NotFound, RuntimeFailure, TerminalFailure, located
from orchestr.model import (
    EXEC_OUTPUT_LIMIT, L_NAMESPACE, Container, ContainerSpec, Event, EventAction, ExecResult, LogLine, RestartPolicy,
    State, Stats,
)
from orchestr.runtime import Capabilities, EventDelivery, ExecOutput

from . import logger, network, spec as specs
from .client import RUNTIME, Connection, address, code, namespace
from .images import SNAPSHOTTER, Images, Resolved
from .proto import containers_pb2, payloads_pb2, snapshots_pb2, task_pb2, tasks_pb2

if TYPE_CHECKING:
    import anyio
    import grpc
else:
    from . import lazy

    anyio, grpc = lazy.module("anyio"), lazy.module("grpc")  # not for a one-off run (oneoff.py)

INTERNAL = "io.orchestr.containerd/"
I_NAME = INTERNAL + "name"
I_LOG = INTERNAL + "log"  # the log's directory
I_STARTED = INTERNAL + "started-at"
I_RESTARTS = INTERNAL + "restarts"
I_POLICY = INTERNAL + "restart-policy"
I_NETWORK = INTERNAL + "network"
I_EMPTY = INTERNAL + "empty"  # the keys of labels whose value is empty: containerd drops such labels
RUNC = "io.containerd.runc.v2"
SPEC_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
PROCESS_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/Process"
CALL = 60.0
POLL = 0.05
LOG_MAX_SIZE = 10 << 20
LOG_MAX_FILES = 5
_ID = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")
_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_ORCHESTR = os.path.dirname(os.path.abspath(orchestr.__file__))
TOPICS = {"/containers/create": EventAction.CREATE, "/tasks/start": EventAction.START,
          "/tasks/exit": EventAction.DIE, "/tasks/oom": EventAction.OOM, "/tasks/paused": EventAction.PAUSE,
          "/tasks/resumed": EventAction.UNPAUSE, "/containers/delete": EventAction.DESTROY}
PAYLOADS = {"containerd.events.ContainerCreate": payloads_pb2.ContainerCreate,
            "containerd.events.ContainerDelete": payloads_pb2.ContainerDelete,
            "containerd.events.TaskStart": payloads_pb2.TaskStart, "containerd.events.TaskExit": payloads_pb2.TaskExit,
            "containerd.events.TaskOOM": payloads_pb2.TaskOOM, "containerd.events.TaskPaused": payloads_pb2.TaskPaused,
            "containerd.events.TaskResumed": payloads_pb2.TaskResumed}


def container_id(namespace: str, name: str) -> str:
    """containerd's id of orchestr's container name in namespace: readable where containerd's rules allow."""
    id = f"{namespace}_{name}"
    if len(id) <= 76 and _ID.fullmatch(id.replace("_", "-")):
        return id
    return hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()


def _signum(name: str | int) -> int:
    text = str(name).upper()
    try:
        return int(text) if text.isdigit() else signals.Signals[text if text.startswith("SIG") else f"SIG{text}"]
    except KeyError:
        raise TerminalFailure(f"unknown signal {name!r}; expected a name such as SIGTERM or a number",
                              runtime=RUNTIME) from None


def _entries_of(dirs: list[str], path: str) -> str:
    """A file of the container's root read from its snapshot's directories, upper first; regular files only."""
    for d in dirs:
        full = os.path.join(d, path)
        try:
            fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return ""
            return f.read(16 << 20).decode("utf-8", "replace")
    return ""


def _layer_dirs(mounts: Sequence) -> list[str]:
    """The directories of a snapshot's mounts, upper first (overlay), or its one directory (bind)."""
    dirs: list[str] = []
    for m in mounts:
        if m.type == "bind":
            dirs.append(m.source)
        for option in m.options:
            key, _, value = option.partition("=")
            if key == "upperdir":
                dirs.insert(0, value)
            elif key == "lowerdir":
                dirs.extend(value.split(":"))
    return dirs


class ContainerdRuntime(Images):
    """orchestr's runtime on the host's containerd (ORCHESTR_CONTAINERD_ADDRESS, default its socket)."""

    name = RUNTIME

    def __init__(self, config: Config) -> None:
        self.config = config
        self.conn = Connection(address(), namespace())
        self.capabilities = Capabilities(
            restarts=True, events=EventDelivery.PUSHED, limits=True, image_import=True, pause=True, signal=True,
            stats=True, exec_options=True, exec_tty=True, blocking_run=True,
        )
        self._names: dict[str, tuple[str, str]] = {}  # id -> (name, namespace), for the events of deleted ones
        self._hosts_lock: anyio.Lock | None = None
        self._bridges_lock: anyio.Lock | None = None
        self._fresh: dict[str, tuple[containers_pb2.Container, Sequence]] = {}  # made here, not started: record, mounts
        self.bridges_open: dict[str, int] = {}  # bridge whose rules this runtime made or saw -> its attaches under way
        self.hosts_asked: dict[str, list[int]] = {}  # namespace -> [refreshes asked for, asked for when last done]
        self.bridges_closing: set[str] = set()

    @property
    def hosts_lock(self) -> anyio.Lock:
        """Held while a namespace's /etc/hosts files are rewritten, so a stale list never lands last."""
        if self._hosts_lock is None:
            self._hosts_lock = anyio.Lock()
        return self._hosts_lock

    @property
    def bridges_lock(self) -> anyio.Lock:
        """Held while a bridge's firewall rules are looked at (cni.attach)."""
        if self._bridges_lock is None:
            self._bridges_lock = anyio.Lock()
        return self._bridges_lock

    # -- where things are -----------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return private_dir(self.config.state_dir / "containerd")

    def _logger(self) -> str:
        """The logger's executable: a script of this state dir's own, running this Python as `-IS`."""
        path = self.root / "orchestr-containerd-logger"
        script = (f"#!{sys.executable} -IS\n"
                  "import sys, types\n"
                  f"for n, d in (('orchestr', {_ORCHESTR!r}), ('orchestr_containerd', {_PACKAGE!r})):\n"
                  "    p = types.ModuleType(n); p.__path__ = [d]; sys.modules[n] = p\n"
                  "from orchestr_containerd.logger import main\n"
                  "main(sys.argv[1:])\n")
        try:
            if path.read_text() == script:
                return str(path)
        except FileNotFoundError:
            pass
        tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}")
        tmp.write_text(script)
        tmp.chmod(0o700)
        tmp.replace(path)
        return str(path)

    def _restarter(self) -> list[str]:
        return [sys.executable, "-I", os.path.join(_PACKAGE, "restart.py")]

    # -- looking things up ----------------------------------------------------------------------------------------
    async def _get(self, id: str) -> containers_pb2.Container:
        with self.conn.errors(f"container {id}", container=id, missing=f"container {id} not found"):
            found = (await self.conn.containers.Get(containers_pb2.GetContainerRequest(id=id),
                                                    metadata=self.conn.metadata, timeout=CALL)).container
        if L_NAMESPACE not in found.labels:
            raise NotFound(f"container {id} not found (containerd has one, but orchestr does not own it)",
                           runtime=RUNTIME, container=id)
        self._names[id] = (found.labels.get(I_NAME, id), found.labels[L_NAMESPACE])
        return found

    async def _task(self, id: str) -> task_pb2.Process | None:
        try:
            return (await self.conn.tasks.Get(tasks_pb2.GetRequest(container_id=id), metadata=self.conn.metadata,
                                              timeout=CALL)).process
        except grpc.RpcError as e:
            if code(e) == grpc.StatusCode.NOT_FOUND:
                return None
            raise self.conn.translate(e, f"container {id}", id) from None

    def _container(self, c: containers_pb2.Container, task: task_pb2.Process | None) -> Container:
        labels = {k: v for k, v in c.labels.items() if not k.startswith(INTERNAL)}
        labels.update(dict.fromkeys(json.loads(c.labels.get(I_EMPTY) or "[]"), ""))
        started = c.labels.get(I_STARTED)
        exit_code = pid = finished = None
        if task is None:
            state = State.EXITED if started else State.CREATED
            exit_code = UNKNOWN_EXIT if started else None
        elif task.status in (task_pb2.RUNNING,):
            state, pid = State.RUNNING, task.pid
        elif task.status in (task_pb2.PAUSED, task_pb2.PAUSING):
            state, pid = State.PAUSED, task.pid
        elif task.status == task_pb2.STOPPED:
            state, exit_code = State.EXITED, task.exit_status
            finished = task.exited_at.ToJsonString() if task.exited_at.seconds > 0 else None
        else:
            state = State.CREATED
        restarts = c.labels.get(I_RESTARTS)
        return Container(
            id=c.id, name=c.labels.get(I_NAME, c.id), namespace=c.labels[L_NAMESPACE], runtime=RUNTIME,
            image=c.labels.get(INTERNAL + "image", c.image), state=state, labels=labels, exit_code=exit_code,
            pid=pid, ip=c.labels.get(INTERNAL + "ip") or None, oom_killed=bool(exit_code == 137 and self._oom(c)),
            restarts=int(restarts) if restarts and restarts.isdigit() else 0,
            ports=network.ports_of(c.labels.get(INTERNAL + "ports")),
            created_at=c.created_at.ToJsonString() if c.HasField("created_at") else None, started_at=started,
            finished_at=finished)

    def _oom(self, c: containers_pb2.Container) -> bool:
        path = f"/sys/fs/cgroup/memory/{self.conn.namespace}/{c.id}/memory.oom_control"
        try:
            with open(path) as f:
                return any(line.split()[1:] != ["0"] for line in f if line.startswith("oom_kill "))
        except OSError:
            return False

    # -- create ---------------------------------------------------------------------------------------------------
    async def create(self, spec: ContainerSpec) -> Container:
        id = container_id(spec.namespace, spec.name)
        with located(RUNTIME, spec.name):
            checked = volumes(spec)
            resolved = await self.image_config(spec.image)
            if resolved.chain and not await self._has_snapshot(resolved.chain):
                async with self.lease() as lease:
                    await self.unpack(lease, resolved)
            directory = self.root / "containers" / id
            async with self.lease() as lease:
                mounts = await self._prepare(spec, id, resolved.chain or "", lease, directory)
                made = False
                try:
                    net = await network.attach(self, spec, id, self._fresh_dir(spec, checked, directory))
                    record = self._container_record(spec, id, checked, resolved, mounts, directory, net)
                    self._names[id] = (spec.name, spec.namespace)  # before containerd's create event comes
                    with self.conn.errors(f"container {spec.name}", spec.name):
                        created = (await self.conn.containers.Create(
                            containers_pb2.CreateContainerRequest(container=record), metadata=self.conn.metadata,
                            timeout=CALL)).container
                    made = True
                finally:
                    if not made:
                        with anyio.CancelScope(shield=True):
                            await self._undo(id, directory, spec.network, spec.namespace)
        self._fresh[id] = (created, mounts)
        return self._container(created, None)

    def _fresh_dir(self, spec: ContainerSpec, checked: Sequence, directory: Path, log: bool = True) -> Path:
        """The container's own directory made anew (its log dir within, unless its output goes elsewhere), and its
        named volumes' directories."""
        shutil.rmtree(directory, ignore_errors=True)
        private_dir(directory)
        if log:
            private_dir(directory / "log")
        volumes_dir = private_dir(self.root / "volumes")
        for v in checked:
            if v.type == "volume":
                private_dir(volumes_dir / volume_key(spec.namespace, v.source or ""))
        return directory

    def _container_record(self, spec: ContainerSpec, id: str, checked: Sequence, resolved: Resolved, mounts: Sequence,
                directory: Path, net: network.Attached, labels: dict[str, str] | None = None,
                log: bool = True) -> containers_pb2.Container:
        """containerd's record of the container spec over the snapshot mounts: its OCI spec, its logger's
        settings (unless log is False: its output goes elsewhere) and orchestr's labels (with labels of the caller's
        added)."""
        image_config = resolved.config.get("config") or {}
        try:
            user = specs.lookup_user(spec.user or image_config.get("User") or None,
                                     _entries_of(_layer_dirs(mounts), "etc/passwd"),
                                     _entries_of(_layer_dirs(mounts), "etc/group"))
        except LookupError as e:
            raise TerminalFailure(f"container {spec.name}: {e}", runtime=RUNTIME, container=spec.name) from None
        log_dir = directory / "log"
        runtime_spec = specs.runtime_spec(
            dataclasses.replace(spec, volumes=checked),
            image_config, id=id, user=user, files=net.files, netns=net.netns,
            cgroups_path=f"/{self.conn.namespace}/{id}", volumes_dir=str(self.root / "volumes"),
            nofile=min(specs.NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        if log:
            (log_dir / "logger.json").write_text(json.dumps({
                "max_size": int(os.environ.get("ORCHESTR_CONTAINERD_LOG_MAX_SIZE") or LOG_MAX_SIZE),
                "max_files": int(os.environ.get("ORCHESTR_CONTAINERD_LOG_MAX_FILES") or LOG_MAX_FILES),
                "restarter": self._restarter() if spec.restart_policy != RestartPolicy.NEVER else None,
                "address": self.conn.socket, "namespace": self.conn.namespace,
            }))
        all_labels = {**spec.labels, I_NAME: spec.name, I_LOG: str(log_dir), I_POLICY: str(spec.restart_policy),
                      I_NETWORK: spec.network, INTERNAL + "image": spec.image, **net.labels, **(labels or {})}
        if empty := sorted(k for k, v in spec.labels.items() if not v):
            all_labels[I_EMPTY] = json.dumps(empty)
        return containers_pb2.Container(
            id=id, labels=all_labels, image=resolved.name, runtime=containers_pb2.Container.Runtime(name=RUNC),
            spec={"type_url": SPEC_TYPE, "value": json.dumps(runtime_spec).encode()},
            snapshotter=SNAPSHOTTER, snapshot_key=id)

    async def _prepare(self, spec: ContainerSpec, id: str, parent: str, lease: str, directory: Path) -> Sequence:
        """The container's own snapshot over its image; one that an interrupted create left (a killed apply: no
        container record names it) is removed with the rest of what that create made, and made again."""
        for attempt in range(2):
            try:
                return (await self.conn.snapshots.Prepare(snapshots_pb2.PrepareSnapshotRequest(
                    snapshotter=SNAPSHOTTER, key=id, parent=parent), metadata=self.conn.leased(lease),
                    timeout=CALL)).mounts
            except grpc.RpcError as e:
                if code(e) != grpc.StatusCode.ALREADY_EXISTS:
                    raise self.conn.translate(e, f"container {spec.name}", spec.name) from None
            try:
                await self.conn.containers.Get(containers_pb2.GetContainerRequest(id=id), metadata=self.conn.metadata,
                                               timeout=CALL)
            except grpc.RpcError as e:
                if code(e) != grpc.StatusCode.NOT_FOUND or attempt:
                    raise self.conn.translate(e, f"container {spec.name}", spec.name) from None
                await self._undo(id, directory, "bridge", spec.namespace)
                continue
            break
        raise Conflict(f"container name {spec.name} is already in use in namespace {spec.namespace}",
                       runtime=RUNTIME, container=spec.name)

    async def _undo(self, id: str, directory: Path, net: str, namespace: str) -> None:
        with contextlib.suppress(grpc.RpcError):
            await self.conn.snapshots.Remove(snapshots_pb2.RemoveSnapshotRequest(snapshotter=SNAPSHOTTER, key=id),
                                             metadata=self.conn.metadata, timeout=CALL)
        with contextlib.suppress(Exception):
            await network.detach(self, id, directory, net, namespace)
        shutil.rmtree(directory, ignore_errors=True)

    def run_blocking(
        self, spec: ContainerSpec, *, output: Callable[[LogLine], None] | None = None, remove: bool = False,
        stdin: int | None = None, on_signal: str | None = None,
    ) -> tuple[Container, int] | None:
        """A one-off run to its end without an event loop (see oneoff.run); None, with nothing changed, for a
        bridge network (its CNI calls belong to the async verbs), standard input or a terminal, or an image that
        is not in containerd or not unpacked yet."""
        if spec.interactive or spec.tty or spec.network not in ("none", "host"):
            return None
        from . import oneoff

        return oneoff.run(self, spec, output, remove, on_signal)

    # -- start, stop, delete --------------------------------------------------------------------------------------
    async def start(self, id: str) -> None:
        with located(RUNTIME, id):
            fresh = self._fresh.pop(id, None)
            if fresh is not None:  # just made by create: its record and mounts are at hand, and it has no task
                c, mounts = fresh
                task = None
            else:
                c, mounts = await self._get(id), None
                task = await self._task(id)
                if task is not None and task.status in (task_pb2.RUNNING, task_pb2.PAUSED, task_pb2.PAUSING):
                    return
                _stopped(c, False)
            labelled = self.conn.containers.Update(containers_pb2.UpdateContainerRequest(  # under way meanwhile
                container=containers_pb2.Container(id=id, labels={I_STARTED: rfc3339(), I_RESTARTS: "0"}),
                update_mask={"paths": [f"labels.{I_STARTED}", f"labels.{I_RESTARTS}"]}), metadata=self.conn.metadata,
                timeout=CALL)
            failed: list[Exception] = []
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._named, c)  # its name joins the namespace's /etc/hosts files meanwhile
                    try:
                        if task is not None and task.status == task_pb2.CREATED:
                            # made by a start that was interrupted (a killed apply): its logger runs already; start
                            # it as it is, as a new one would first kill it, and that exit would read as the new
                            # task's
                            with self.conn.errors(f"container {id}", id):
                                await self.conn.tasks.Start(tasks_pb2.StartRequest(container_id=id),
                                                            metadata=self.conn.metadata, timeout=CALL)
                        else:
                            await start_task(self.conn, c, task, self._logger(), mounts)
                    except Exception as e:  # noqa: BLE001 - raised below, as it is rather than in a group
                        failed.append(e)
                if failed:
                    raise failed[0]
            except BaseException:
                with anyio.CancelScope(shield=True), contextlib.suppress(grpc.RpcError):
                    await labelled
                raise
            with self.conn.errors(f"container {id}", id, missing=f"container {id} not found"):
                await labelled

    async def _named(self, c: containers_pb2.Container) -> None:
        """A new container's name in its namespace's /etc/hosts files; a rewrite that fails leaves it to the next."""
        with contextlib.suppress(Exception):
            await network.created(self, c.labels.get(I_NETWORK, "none"), c.labels[L_NAMESPACE])

    async def stop(self, id: str, *, signal: str = "SIGTERM", timeout: float = 10.0) -> None:
        with located(RUNTIME, id):
            c = await self._get(id)
            number = _signum(signal)
            task = await self._task(id)
            if task is None or task.status == task_pb2.STOPPED:
                return
            _stopped(c, True)
            if not (task.status == task_pb2.RUNNING and self._signal(id, task.pid, number)):
                await self._kill(id, number)
            if task.status in (task_pb2.PAUSED, task_pb2.PAUSING):
                with contextlib.suppress(RuntimeFailure):
                    await self.resume(id)
            if await self._wait_task(id, timeout) is None:
                await self._kill(id, signals.SIGKILL, all=True)
                await self._wait_task(id, CALL)

    def _signal(self, id: str, pid: int, number: int) -> bool:
        """Sends signal number to the task's first process from here, as `runc kill` would, sparing the shim that
        process of its own for every container stopped; False, with nothing sent, unless pid still is a process of
        the container (its cgroup says so, read through a pidfd that keeps the pid from being reused meanwhile)."""
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return False
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                if not any(line.endswith(f":/{self.conn.namespace}/{id}") for line in f.read().splitlines()):
                    return False
            signals.pidfd_send_signal(fd, number)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    async def _kill(self, id: str, number: int, all: bool = False) -> None:
        try:
            await self.conn.tasks.Kill(tasks_pb2.KillRequest(container_id=id, signal=number, all=all),
                                       metadata=self.conn.metadata, timeout=CALL)
        except grpc.RpcError as e:
            if code(e) not in (grpc.StatusCode.NOT_FOUND,):
                raise self.conn.translate(e, f"container {id}", id) from None

    async def _wait_task(self, id: str, timeout: float) -> int | None:
        """The exit code of id's task once it ends within timeout seconds; None when it is still running then.
        The deadline is the call's own: an anyio cancel scope around a grpc.aio call leaks its CancelledError."""
        try:
            answer = await self.conn.tasks.Wait(tasks_pb2.WaitRequest(container_id=id), metadata=self.conn.metadata,
                                                timeout=timeout)
            return answer.exit_status
        except grpc.RpcError as e:
            if code(e) == grpc.StatusCode.NOT_FOUND:
                return UNKNOWN_EXIT
            if code(e) == grpc.StatusCode.DEADLINE_EXCEEDED:
                return None
            raise self.conn.translate(e, f"container {id}", id) from None

    async def delete(self, id: str, *, force: bool = False) -> None:
        self._fresh.pop(id, None)
        with located(RUNTIME, id):
            c = await self._get(id)
            task = await self._task(id)
            ended = True
            if task is not None and task.status != task_pb2.STOPPED:
                if not force:
                    raise Conflict(f"container {c.labels.get(I_NAME, id)} is running; stop it first, or force",
                                   runtime=RUNTIME, container=id)
                _stopped(c, True)
                await self._kill(id, signals.SIGKILL, all=True)
                if task.status in (task_pb2.PAUSED, task_pb2.PAUSING):
                    with contextlib.suppress(grpc.RpcError):
                        await self.conn.tasks.Resume(tasks_pb2.ResumeTaskRequest(container_id=id),
                                                     metadata=self.conn.metadata, timeout=CALL)
                ended = await self._wait_task(id, CALL) is not None
            log = c.labels.get(I_LOG)
            directory = Path(log).parent if log else self.root / "containers" / id
            net, namespace = c.labels.get(I_NETWORK, "none"), c.labels[L_NAMESPACE]
            gone = anyio.Event()
            failed: list[Exception] = []

            async def records() -> None:
                """The task (containerd's dearest part of a delete), the container's record, its snapshot."""
                try:
                    if task is not None:
                        await delete_task(self.conn, id)
                    with self.conn.errors(f"container {id}", id):
                        try:
                            await self.conn.containers.Delete(containers_pb2.DeleteContainerRequest(id=id),
                                                              metadata=self.conn.metadata, timeout=CALL)
                        except grpc.RpcError as e:
                            if code(e) != grpc.StatusCode.NOT_FOUND:
                                raise
                    with contextlib.suppress(grpc.RpcError):
                        await self.conn.snapshots.Remove(snapshots_pb2.RemoveSnapshotRequest(
                            snapshotter=SNAPSHOTTER, key=id), metadata=self.conn.metadata, timeout=CALL)
                except Exception as e:  # noqa: BLE001 - raised below, once the network's undoing is done
                    failed.append(e)
                finally:
                    gone.set()

            if ended:  # its process is gone: its network is undone meanwhile, its /etc/hosts once the record is
                async with anyio.create_task_group() as tg:
                    tg.start_soon(records)
                    with contextlib.suppress(Exception):
                        await network.detach(self, id, directory, net, namespace, gone.wait)
            else:  # it may still run: nothing more unless its task goes
                await records()
                if not failed:
                    with contextlib.suppress(Exception):
                        await network.detach(self, id, directory, net, namespace)
            if failed:
                raise failed[0]
            shutil.rmtree(directory, ignore_errors=True)

    # -- reading state --------------------------------------------------------------------------------------------
    async def inspect(self, id: str) -> Container:
        with located(RUNTIME, id):
            c = await self._get(id)
            return self._container(c, await self._task(id))

    async def records(self, namespace: str | None = None) -> list[containers_pb2.Container]:
        """containerd's records of orchestr's containers (of one namespace)."""
        key = f'labels."{L_NAMESPACE}"'
        query = f"{key}=={namespace}" if namespace else key
        with self.conn.errors("the container list"):
            return list((await self.conn.containers.List(containers_pb2.ListContainersRequest(filters=[query]),
                                                         metadata=self.conn.metadata, timeout=CALL)).containers)

    async def list(self, namespace: str | None = None) -> list[Container]:
        found = await self.records(namespace)
        with self.conn.errors("the container list"):
            tasks = {t.id: t for t in (await self.conn.tasks.List(
                tasks_pb2.ListTasksRequest(), metadata=self.conn.metadata, timeout=CALL)).tasks}
        out = []
        for c in found:
            self._names[c.id] = (c.labels.get(I_NAME, c.id), c.labels[L_NAMESPACE])
            out.append(self._container(c, tasks.get(c.id)))
        return sorted(out, key=lambda c: (c.namespace, c.name))

    async def wait(self, id: str) -> int:
        with located(RUNTIME, id):
            while True:
                await self._get(id)
                task = await self._task(id)
                if task is not None and task.status == task_pb2.STOPPED:
                    return task.exit_status
                if task is not None and task.status != task_pb2.CREATED:
                    code_ = await self._wait_task(id, 3600)
                    if code_ is not None and (await self._task(id) or task).status == task_pb2.STOPPED:
                        return code_
                await anyio.sleep(POLL)

    async def reattach(self) -> list[Container]:
        return [c for c in await self.list() if c.state in (State.RUNNING, State.PAUSED)]

    async def close(self) -> None:
        await self.conn.close()

    # -- logs -----------------------------------------------------------------------------------------------------
    async def logs(self, id: str, *, follow: bool = False, tail: int | None = None) -> AsyncIterator[LogLine]:
        with located(RUNTIME, id):
            c = await self._get(id)
        path = os.path.join(c.labels.get(I_LOG, ""), logfile.FILE)

        async def ended(wait: float = 0) -> bool:
            """Whether the task has ended (waiting up to wait seconds for it to), and its logger with it."""
            task = await self._task(id)
            done = task is None or task.status == task_pb2.STOPPED
            if not done and wait and task.status == task_pb2.RUNNING:
                done = await self._wait_task(id, wait) is not None
            if done:
                await anyio.to_thread.run_sync(logger.wait_done, os.path.dirname(path))
            return done

        if not follow:
            await ended()
            records, current = logfile.history(path, tail)
            if current is not None:
                current.close()
            for raw in records:
                if (line := _line(raw)) is not None:
                    yield line
            return
        records, current = logfile.history(path, tail)
        for raw in records:
            if (line := _line(raw)) is not None:
                yield line
        partial = b""
        try:
            while True:
                renewed = _renewed(path, current)
                data = current.read() if current is not None else b""
                if data:
                    data, partial = partial + data, b""
                    cut = data.rfind(b"\n") + 1
                    partial = data[cut:]
                    for raw in data[:cut].splitlines():
                        if (line := _line(raw)) is not None:
                            yield line
                    continue
                if renewed:
                    with contextlib.suppress(FileNotFoundError):
                        new = open(path, "rb")  # noqa: SIM115 - closed below
                        if current is not None:
                            current.close()
                        current, partial = new, b""
                    continue
                if await ended(wait=0.1):  # the wait is the pause between looks, cut short by the end
                    if current is not None:
                        for raw in (partial + current.read()).splitlines():
                            if (line := _line(raw)) is not None:
                                yield line
                    return
        finally:
            if current is not None:
                current.close()

    # -- exec -----------------------------------------------------------------------------------------------------
    async def exec(
        self, id: str, argv: Sequence[str], *, env: dict[str, str] | None = None, user: str | None = None,
        workdir: str | None = None, timeout: float | None = None, output: Callable[[LogLine], None] | None = None,
        output_limit: int = EXEC_OUTPUT_LIMIT,
    ) -> ExecResult:
        from . import exec as execs

        with located(RUNTIME, id):
            process = await self._exec_process(id, argv, env=env, user=user, workdir=workdir)
            sink = ExecOutput(output, output_limit)
            code_ = await execs.run(self.conn, id, process, PROCESS_TYPE, self.root / "exec", sink, timeout)
            return sink.result(code_)

    async def exec_terminal(self, id: str, argv: Sequence[str], *, stdin: int | None, stdout: int,
                            env: dict[str, str] | None = None, user: str | None = None,
                            workdir: str | None = None) -> int:
        from . import exec as execs

        with located(RUNTIME, id):
            process = await self._exec_process(id, argv, env=env, user=user, workdir=workdir, tty=True)
            return await execs.terminal(self.conn, id, process, PROCESS_TYPE, self.root / "exec", stdin, stdout)

    async def _exec_process(self, id: str, argv: Sequence[str], *, env: dict[str, str] | None, user: str | None,
                            workdir: str | None, tty: bool = False) -> dict:
        """The process spec of an exec in the running container id."""
        c = await self._get(id)
        task = await self._task(id)
        if task is None or task.status != task_pb2.RUNNING:
            raise Conflict(f"container {c.labels.get(I_NAME, id)} is not running", runtime=RUNTIME, container=id)
        container_spec = json.loads(c.spec.value)
        who = None
        if user:
            mounts = (await self.conn.snapshots.Mounts(snapshots_pb2.MountsRequest(
                snapshotter=SNAPSHOTTER, key=c.snapshot_key), metadata=self.conn.metadata, timeout=CALL)).mounts
            dirs = _layer_dirs(mounts)
            try:
                who = specs.lookup_user(user, _entries_of(dirs, "etc/passwd"), _entries_of(dirs, "etc/group"))
            except LookupError as e:
                raise TerminalFailure(str(e), runtime=RUNTIME, container=id) from None
        return specs.exec_process(container_spec, list(argv), env=env, user=who, workdir=workdir, tty=tty)

    # -- pause, signal, stats -------------------------------------------------------------------------------------
    async def pause(self, id: str) -> None:
        with located(RUNTIME, id):
            await self._get(id)
            await self._running(id)
            with self.conn.errors(f"container {id}", id):
                await self.conn.tasks.Pause(tasks_pb2.PauseTaskRequest(container_id=id), metadata=self.conn.metadata,
                                            timeout=CALL)

    async def resume(self, id: str) -> None:
        with located(RUNTIME, id):
            await self._get(id)
            task = await self._task(id)
            if task is None or task.status not in (task_pb2.PAUSED, task_pb2.PAUSING):
                raise Conflict(f"container {id} is not paused", runtime=RUNTIME, container=id)
            with self.conn.errors(f"container {id}", id):
                await self.conn.tasks.Resume(tasks_pb2.ResumeTaskRequest(container_id=id),
                                             metadata=self.conn.metadata, timeout=CALL)

    async def _running(self, id: str) -> task_pb2.Process:
        task = await self._task(id)
        if task is None or task.status != task_pb2.RUNNING:
            raise Conflict(f"container {id} is not running", runtime=RUNTIME, container=id)
        return task

    async def signal(self, id: str, signal: str) -> None:
        with located(RUNTIME, id):
            await self._get(id)
            number = _signum(signal)
            task = await self._task(id)
            if task is None or task.status == task_pb2.STOPPED:
                raise Conflict(f"container {id} is not running", runtime=RUNTIME, container=id)
            await self._kill(id, number)

    async def stats(self, id: str) -> Stats:
        from . import stats

        with located(RUNTIME, id):
            await self._get(id)
            task = await self._running(id)
            return stats.sample(task.pid)

    # -- events ---------------------------------------------------------------------------------------------------
    def events(self) -> AsyncIterator[Event]:
        from .proto import events_pb2

        filters = [f'namespace=={self.conn.namespace},topic=="{topic}"' for topic in TOPICS]
        call = self.conn.events.Subscribe(events_pb2.SubscribeRequest(filters=filters))
        return self._events(call)

    async def _events(self, call) -> AsyncIterator[Event]:  # type: ignore[no-untyped-def]
        try:
            async for envelope in call:
                action = TOPICS.get(envelope.topic)
                kind = PAYLOADS.get(envelope.event.type_url.rpartition("/")[2])
                if action is None or kind is None:
                    continue
                payload = kind.FromString(envelope.event.value)
                id = getattr(payload, "container_id", "") or getattr(payload, "id", "")
                if action == EventAction.DIE and getattr(payload, "id", id) not in ("", id):
                    continue  # an exec's process ended, not the container's
                known = self._names.get(id)
                if known is None:
                    try:
                        await self._get(id)
                    except RuntimeFailure:
                        continue
                    known = self._names[id]
                name, ns = known
                state = {EventAction.START: State.RUNNING, EventAction.DIE: State.EXITED,
                         EventAction.PAUSE: State.PAUSED, EventAction.UNPAUSE: State.RUNNING,
                         EventAction.CREATE: State.CREATED}.get(action)
                yield Event(runtime=RUNTIME, id=id, name=name, namespace=ns, action=action, state=state,
                            exit_code=payload.exit_status if action == EventAction.DIE else None,
                            time=envelope.timestamp.ToJsonString())
        except grpc.RpcError as e:
            if code(e) != grpc.StatusCode.CANCELLED:
                raise self.conn.translate(e, "containerd's events") from None
        finally:
            call.cancel()


def _stopped(c: containers_pb2.Container, stopped: bool) -> None:
    """Marks container c stopped by orchestr (or no longer) with a file in its log's directory, which its logger
    and restarter read when its process ends (logger.STOPPED): no restart then, and no restarter started at all,
    whose Python, grpc and calls would cost as much as the stop itself."""
    from .logger import STOPPED

    path = os.path.join(c.labels.get(I_LOG, ""), STOPPED)
    if not c.labels.get(I_LOG):
        return
    if stopped:
        with contextlib.suppress(FileNotFoundError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _line(raw: bytes) -> LogLine | None:
    parsed = logfile.parse(raw)
    return LogLine(stream=parsed[0], data=parsed[1], time=parsed[2]) if parsed else None


def _renewed(path: str, file) -> bool:  # type: ignore[no-untyped-def]
    try:
        inode = os.stat(path).st_ino
    except FileNotFoundError:
        return False
    return file is None or inode != os.fstat(file.fileno()).st_ino


async def start_task(conn: Connection, c: containers_pb2.Container, task: task_pb2.Process | None,
                     logger: str, mounts: Sequence | None = None) -> None:
    """Makes and starts a new task for container c (the ended one removed first) over its snapshot's mounts (asked
    for when not given), its output to the logger."""
    id = c.id
    if task is not None:
        await delete_task(conn, id)
    if mounts is None:
        with conn.errors(f"container {id}", id):
            mounts = (await conn.snapshots.Mounts(snapshots_pb2.MountsRequest(snapshotter=SNAPSHOTTER,
                                                                              key=c.snapshot_key),
                                                  metadata=conn.metadata, timeout=CALL)).mounts
    from .logger import CONFIG, settings

    log_dir = c.labels.get(I_LOG, "")
    uri = f"binary://{logger}?{quote(log_dir, safe='/')}"
    with contextlib.suppress(OSError, ValueError, KeyError):  # without, the logger reads its config itself
        uri += "=" + settings(json.loads(Path(log_dir, CONFIG).read_text()))
    try:
        await conn.tasks.Create(tasks_pb2.CreateTaskRequest(container_id=id, rootfs=mounts, stdout=uri, stderr=uri),
                                metadata=conn.metadata, timeout=CALL)
    except grpc.RpcError as e:
        details = e.details() if hasattr(e, "details") else str(e)
        raise TerminalFailure(f"container {c.labels.get(I_NAME, id)} did not start: {' '.join(details.split())}",
                              runtime=RUNTIME, container=id) from None
    try:
        await conn.tasks.Start(tasks_pb2.StartRequest(container_id=id), metadata=conn.metadata, timeout=CALL)
    except grpc.RpcError as e:
        with anyio.CancelScope(shield=True):
            await delete_task(conn, id)
        details = e.details() if hasattr(e, "details") else str(e)
        raise TerminalFailure(f"container {c.labels.get(I_NAME, id)} did not start: {' '.join(details.split())}",
                              runtime=RUNTIME, container=id) from None


async def delete_task(conn: Connection, id: str) -> None:
    try:
        await conn.tasks.Delete(tasks_pb2.DeleteTaskRequest(container_id=id), metadata=conn.metadata, timeout=CALL)
    except grpc.RpcError as e:
        if code(e) != grpc.StatusCode.NOT_FOUND:
            raise conn.translate(e, f"container {id}", id) from None
