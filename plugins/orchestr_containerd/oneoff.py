"""A one-off container run to its end without an event loop (`orchestr run` in the foreground, network none or
host): made, started, its output read (from FIFOs when it is removed afterwards, else followed from its log),
signals to orchestr passed on, removed afterwards when asked; over blocking gRPC calls made by wire.py, so that
such a run loads neither grpc nor asyncio, and in as few calls as containerd allows (the task is made from the
snapshot's mounts as Prepare returned them, its exit read from Wait rather than asked for again)."""

from __future__ import annotations

import contextlib
import json
import os
import signal as signals
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from orchestr import logfile
from orchestr.config import private_dir
from orchestr.containers import rfc3339, volumes
from orchestr.errors import Interrupted, located
from orchestr.model import Container, ContainerSpec, LogLine
from orchestr.registry import media, platform
from orchestr.registry.reference import parse
from orchestr.signalhold import SignalHold

from . import logger, network, wire
from .client import RUNTIME
from .images import BLOB_CACHE_ITEM, LEASE_EXPIRY, SNAPSHOTTER, Resolved, sha256
from .proto import containers_pb2, content_pb2, images_pb2, leases_pb2, snapshots_pb2, task_pb2, tasks_pb2

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from .runtime import ContainerdRuntime

M = TypeVar("M", bound="Message")

CALL = 60.0
FOLLOW = 0.01  # seconds between looks at a log that has not grown
DRAIN = 2.0  # seconds a one-off's FIFOs may stay open after its task ended (the shim waits as long for its copy)
READ = 1 << 16


class _Calls:
    """containerd's services, called one blocking call at a time (wire.py), each with the namespace header."""

    def __init__(self, rt: ContainerdRuntime):
        self.rt = rt

    def __call__(self, method: str, request: Message, answer: type[M] | None = None, timeout: float | None = CALL,
                 lease: str | None = None) -> M | None:
        """method ("tasks.v1.Tasks/Create") called with request; its answer parsed as answer (None: not read)."""
        metadata = self.rt.conn.leased(lease) if lease else self.rt.conn.metadata
        messages = wire.call(self.rt.conn.socket, f"/containerd.services.{method}", request.SerializeToString(),
                             metadata, timeout)
        return answer.FromString(messages[0] if messages else b"") if answer is not None else None

    @contextlib.contextmanager
    def errors(self, what: str, container: str | None = None) -> Iterator[None]:
        try:
            yield
        except wire.Status as e:
            raise self.rt.conn.failure(e.name, e.details, what, container) from None

    def blob(self, digest: str, what: str) -> dict:
        """A manifest or config, from this state dir's copy when it has one: its digest names it, so a copy that
        still matches it is the blob, and the streaming read is spared."""
        path = self.rt.root / "blobs" / digest.replace(":", "-")
        with contextlib.suppress(OSError):
            data = path.read_bytes()
            if sha256(data) == digest:
                return json.loads(data)
        with self.errors(what):
            data = b"".join(content_pb2.ReadContentResponse.FromString(part).data for part in wire.call(
                self.rt.conn.socket, "/containerd.services.content.v1.Content/Read",
                content_pb2.ReadContentRequest(digest=digest).SerializeToString(), self.rt.conn.metadata, CALL))
        if len(data) <= BLOB_CACHE_ITEM and sha256(data) == digest:
            private_dir(path.parent)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_bytes(data)
            tmp.replace(path)
        return json.loads(data)

    def resolve(self, ref: str) -> Resolved | None:
        """The image as Images.resolve reads it; None when containerd does not have it."""
        try:
            record = self("images.v1.Images/Get", images_pb2.GetImageRequest(name=str(parse(ref))),
                          images_pb2.GetImageResponse).image
        except wire.Status as e:
            if e.name == "NOT_FOUND":
                return None
            raise self.rt.conn.failure(e.name, e.details, f"image {ref}") from None
        what = f"image {record.name}"
        digest = record.target.digest
        doc = self.blob(digest, what)
        if record.target.media_type in media.INDEXES or "manifests" in doc:
            digest = platform.select(doc.get("manifests") or [], what)["digest"]
            doc = self.blob(digest, what)
        return Resolved(record.name, digest, doc, doc["config"]["digest"], self.blob(doc["config"]["digest"], what),
                        None)

    def has_snapshot(self, key: str) -> bool:
        try:
            self("snapshots.v1.Snapshots/Stat", snapshots_pb2.StatSnapshotRequest(snapshotter=SNAPSHOTTER, key=key))
            return True
        except wire.Status as e:
            if e.name == "NOT_FOUND":
                return False
            raise self.rt.conn.failure(e.name, e.details, f"snapshot {key}") from None

    def kill(self, id: str, number: int, all: bool = False) -> bool:
        """Sends the task signal number; False when it is gone (or containerd refused)."""
        try:
            self("tasks.v1.Tasks/Kill", tasks_pb2.KillRequest(container_id=id, signal=number, all=all))
            return True
        except wire.Status:
            return False

    def wait(self, id: str, timeout: float | None = CALL) -> tasks_pb2.WaitResponse:
        answer = self("tasks.v1.Tasks/Wait", tasks_pb2.WaitRequest(container_id=id), tasks_pb2.WaitResponse, timeout)
        assert answer is not None
        return answer


def run(rt: ContainerdRuntime, spec: ContainerSpec, output: Callable[[LogLine], None] | None, remove: bool,
        on_signal: str | None) -> tuple[Container, int] | None:
    """ContainerdRuntime.run_blocking of spec; None, with nothing changed, when the image is not in containerd or
    not unpacked yet, or its name is taken (the async verbs pull, unpack and report those)."""
    from .runtime import I_RESTARTS, I_STARTED, container_id

    calls = _Calls(rt)
    id = container_id(spec.namespace, spec.name)
    with located(RUNTIME, spec.name):
        checked = volumes(spec)
    resolved = calls.resolve(spec.image)
    if resolved is None or (resolved.chain and not calls.has_snapshot(resolved.chain)):
        return None
    directory = rt.root / "containers" / id
    lease = f"orchestr-{os.urandom(8).hex()}"
    expire = rfc3339((time.time_ns() // 1_000_000_000 + LEASE_EXPIRY) * 1_000_000_000)
    with calls.errors("a lease"):
        calls("leases.v1.Leases/Create", leases_pb2.CreateRequest(id=lease, labels={"containerd.io/gc.expire": expire}))
    try:
        try:
            mounts = calls("snapshots.v1.Snapshots/Prepare", snapshots_pb2.PrepareSnapshotRequest(
                snapshotter=SNAPSHOTTER, key=id, parent=resolved.chain or ""),
                snapshots_pb2.PrepareSnapshotResponse, lease=lease).mounts
        except wire.Status as e:
            if e.name == "ALREADY_EXISTS":
                return None  # a name in use, or what a killed create left: create() tells which, and clears
            raise rt.conn.failure(e.name, e.details, f"container {spec.name}", spec.name) from None
        made = False
        try:
            rt._fresh_dir(spec, checked, directory, log=not remove)  # removed: its output comes through FIFOs
            record = rt._container_record(spec, id, checked, resolved, mounts, directory, network.local(spec, directory),
                                          {I_STARTED: rfc3339(), I_RESTARTS: "0"}, log=not remove)
            with calls.errors(f"container {spec.name}", spec.name):
                record = calls("containers.v1.Containers/Create",
                               containers_pb2.CreateContainerRequest(container=record),
                               containers_pb2.CreateContainerResponse).container
            made = True
        finally:
            if not made:
                _remove(calls, id, directory, container=False)
    finally:
        with contextlib.suppress(wire.Status):
            calls("leases.v1.Leases/Delete", leases_pb2.DeleteRequest(id=lease))
    with SignalHold(on_signal) as hold:
        try:
            with calls.errors(f"container {id}", id):
                return _run(rt, calls, record, mounts, output, hold, spec.stop_grace_period,
                            directory if remove else None)
        except Interrupted as e:
            if remove:
                _stop(calls, id, spec.stop_grace_period)
            raise Interrupted.one_off(e.signal, spec.name, remove) from None
        finally:
            hold.close()
            if remove:
                with calls.errors(f"container {id}", id):
                    _remove(calls, id, directory)


def _run(rt: ContainerdRuntime, calls: _Calls, record: containers_pb2.Container, mounts: Any,
         output: Callable[[LogLine], None] | None, hold: SignalHold, grace: float,
         fifos: Path | None) -> tuple[Container, int]:
    """run(), from the container made to its end: its state then, and its exit code. With fifos (a directory: a
    run whose container is removed after, so whose log nobody could read), the task's output comes through FIFOs
    there that this process reads, as ctr does, rather than through a logger process the shim would start and
    wait for."""
    from .runtime import I_LOG, I_NAME

    id = record.id
    log_dir = record.labels[I_LOG]
    relay = _Fifos(fifos) if fifos is not None else None
    try:
        if relay is not None:
            stdout, stderr = relay.paths
        else:
            stdout = stderr = f"binary://{rt._logger()}?{quote(log_dir, safe='/')}"
        try:
            calls("tasks.v1.Tasks/Create", tasks_pb2.CreateTaskRequest(container_id=id, rootfs=mounts, stdout=stdout,
                                                                       stderr=stderr))
            calls("tasks.v1.Tasks/Start", tasks_pb2.StartRequest(container_id=id))
        except wire.Status as e:
            from orchestr.errors import TerminalFailure

            raise TerminalFailure(f"container {record.labels.get(I_NAME, id)} did not start: "
                                  f"{' '.join(e.details.split())}", runtime=RUNTIME, container=id) from None
        hold.attach(lambda sig: _forward(calls, id, grace, hold, sig))
        ended: list[tasks_pb2.WaitResponse] = []
        done_r, done_w = os.pipe2(os.O_CLOEXEC)

        def wait() -> None:
            try:
                ended.append(calls.wait(id, timeout=None))
            finally:
                os.close(done_w)

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        try:
            if relay is not None:
                relay.relay(output, done_r)
            elif output is not None:
                _follow(os.path.join(log_dir, logfile.FILE), output, waiter)
            waiter.join()
        finally:
            os.close(done_r)
    finally:
        if relay is not None:
            relay.close()
    if not ended:
        answer = calls.wait(id, timeout=None)
    else:
        answer = ended[0]
    process = task_pb2.Process(container_id=id, status=task_pb2.STOPPED, exit_status=answer.exit_status,
                               exited_at=answer.exited_at)
    return rt._container(record, process), answer.exit_status


class _Fifos:
    """The task's stdout and stderr as FIFOs in a directory, opened here for reading before the shim opens them
    for writing. A FIFO shows as readable only once a writer has opened it, so a read that gets nothing is the
    shim's end closed: it closes it when the container's processes (all in its pid namespace, so all ended with
    its first) have closed theirs."""

    def __init__(self, directory: Path):
        self.paths = (str(directory / "stdout"), str(directory / "stderr"))
        self.fds: dict[int, str] = {}
        for path, stream in zip(self.paths, ("stdout", "stderr"), strict=True):
            os.mkfifo(path, 0o600)
            self.fds[os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)] = stream

    def relay(self, output: Callable[[LogLine], None] | None, ended: int) -> None:
        """Hands on each line of both streams as it comes, until both have ended, or DRAIN seconds after the fd
        ended became readable (the task has ended): a writer of the shim's that stays open cannot hold the run."""
        import select

        partial = dict.fromkeys(self.fds, b"")
        open_fds = list(self.fds)
        deadline = None
        while open_fds:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([*open_fds, *([ended] if deadline is None else [])], [], [], timeout)
            if not readable:
                break
            for fd in readable:
                if fd == ended:
                    deadline = time.monotonic() + DRAIN
                    continue
                try:
                    data = os.read(fd, READ)
                except BlockingIOError:
                    continue
                if not data:
                    open_fds.remove(fd)
                partial[fd] = _hand_on(self.fds[fd], partial[fd] + data, output, end=not data)
        for fd, rest in partial.items():
            _hand_on(self.fds[fd], rest, output, end=True)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = {}


def _follow(path: str, output: Callable[[LogLine], None], waiter: threading.Thread) -> None:
    """Hands on each line of the log at path until the task has ended and its logger written the last."""
    from .runtime import _renewed

    current = None
    partial = b""
    done = False
    try:
        while True:
            if current is None or _renewed(path, current):
                with contextlib.suppress(FileNotFoundError):
                    new = open(path, "rb")  # noqa: SIM115 - closed below
                    if current is not None:  # rotated: the old file's rest first
                        _lines(partial + current.read(), output)
                        partial = b""
                        current.close()
                    current = new
            data = current.read() if current is not None else b""
            if data:
                partial = _lines(partial + data, output)
                continue
            if done:
                return
            if not waiter.is_alive():
                logger.wait_done(os.path.dirname(path))
                done = True  # one more look: the logger's last lines
                continue
            waiter.join(FOLLOW)
    finally:
        if current is not None:
            current.close()


def _lines(data: bytes, output: Callable[[LogLine], None]) -> bytes:
    """Hands on data's whole lines; returns the unfinished rest."""
    from .runtime import _line

    cut = data.rfind(b"\n") + 1
    for raw in data[:cut].splitlines():
        if (line := _line(raw)) is not None:
            output(line)
    return data[cut:]


def _hand_on(stream: str, data: bytes, output: Callable[[LogLine], None] | None, end: bool) -> bytes:
    """Hands on data's whole lines (a longer run without a newline in pieces of logfile.MAX_LINE, as the logger
    records it), and at the end what is left too; returns the unfinished rest."""
    start = 0
    while (cut := data.find(b"\n", start) + 1) or len(data) - start >= logfile.MAX_LINE:
        cut = min(cut or len(data), start + logfile.MAX_LINE)
        if output is not None:
            output(LogLine(stream=stream, data=data[start:cut]))
        start = cut
    if end and start < len(data):
        if output is not None:
            output(LogLine(stream=stream, data=data[start:]))
        start = len(data)
    return data[start:]


def _forward(calls: _Calls, id: str, grace: float, hold: SignalHold, sig: int) -> None:
    """Passes sig on as the runtime's stop does with it: sent, then SIGKILL after grace unless the run has ended."""
    if calls.kill(id, sig):
        hold.after(grace, lambda: calls.kill(id, signals.SIGKILL, all=True))


def _stop(calls: _Calls, id: str, grace: float) -> None:
    """SIGTERM, and SIGKILL once grace has passed without an end."""
    if not calls.kill(id, signals.SIGTERM):
        return
    try:
        calls.wait(id, timeout=grace)
    except wire.Status:
        calls.kill(id, signals.SIGKILL, all=True)
        with contextlib.suppress(wire.Status):
            calls.wait(id)


def _remove(calls: _Calls, id: str, directory: Path, container: bool = True) -> None:
    """The task (killed first if it still runs), the container's record, its snapshot and its directory."""
    if container:
        try:
            calls("tasks.v1.Tasks/Delete", tasks_pb2.DeleteTaskRequest(container_id=id))
        except wire.Status as e:
            if e.name == "FAILED_PRECONDITION":  # still running: ended at once
                calls.kill(id, signals.SIGKILL, all=True)
                calls.wait(id)
                calls("tasks.v1.Tasks/Delete", tasks_pb2.DeleteTaskRequest(container_id=id))
            elif e.name != "NOT_FOUND":
                raise
        try:
            calls("containers.v1.Containers/Delete", containers_pb2.DeleteContainerRequest(id=id))
        except wire.Status as e:
            if e.name != "NOT_FOUND":
                raise
    with contextlib.suppress(wire.Status):
        calls("snapshots.v1.Snapshots/Remove", snapshots_pb2.RemoveSnapshotRequest(snapshotter=SNAPSHOTTER, key=id))
    import shutil

    shutil.rmtree(directory, ignore_errors=True)
