"""The gRPC connection to containerd: where it listens, its services' stubs, the namespace header every call
carries, and its errors in orchestr's terms."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from orchestr.errors import Conflict, NotFound, RuntimeFailure, RuntimeUnavailable, TerminalFailure, Timeout

from . import lazy

if TYPE_CHECKING:
    import grpc

    from .proto import containers_pb2_grpc, content_pb2_grpc, diff_pb2_grpc, events_pb2_grpc, images_pb2_grpc
    from .proto import leases_pb2_grpc, snapshots_pb2_grpc, tasks_pb2_grpc
else:
    grpc = lazy.module("grpc")  # loaded by the first call through a stub; oneoff.py calls without grpc (wire.py)

RUNTIME = "containerd"
SOCKET = "/run/containerd/containerd.sock"
NAMESPACE = "orchestr"  # containerd's namespace for every orchestr container, whatever orchestr namespace it is in
MAX_MESSAGE = 64 << 20
S = TypeVar("S")


def address() -> str:
    """ORCHESTR_CONTAINERD_ADDRESS, else containerd's default socket."""
    return os.environ.get("ORCHESTR_CONTAINERD_ADDRESS") or SOCKET


def namespace() -> str:
    """ORCHESTR_CONTAINERD_NAMESPACE, else `orchestr`."""
    return os.environ.get("ORCHESTR_CONTAINERD_NAMESPACE") or NAMESPACE


class Connection:
    """One channel to containerd, made on first use (it belongs to the event loop that uses it)."""

    def __init__(self, socket: str, ns: str):
        self.socket, self.namespace = socket, ns
        self.metadata = (("containerd-namespace", ns),)
        self._channel: grpc.aio.Channel | None = None
        self._stubs: dict[object, Any] = {}  # made once per channel: each makes a callable per method of its service

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE),
                       ("grpc.enable_http_proxy", 0)]
            self._channel = grpc.aio.insecure_channel(f"unix://{self.socket}", options=options)
        return self._channel

    def _stub(self, kind: Callable[[grpc.aio.Channel], S]) -> S:
        channel = self._open()
        stub = self._stubs.get(kind)
        if stub is None:
            stub = self._stubs[kind] = kind(channel)
        return stub

    def leased(self, lease: str) -> tuple[tuple[str, str], ...]:
        """The metadata of a call whose new content and snapshots a lease holds until it is done."""
        return (*self.metadata, ("containerd-lease", lease))

    @property
    def containers(self) -> containers_pb2_grpc.ContainersStub:
        from .proto import containers_pb2_grpc

        return self._stub(containers_pb2_grpc.ContainersStub)

    @property
    def tasks(self) -> tasks_pb2_grpc.TasksStub:
        from .proto import tasks_pb2_grpc

        return self._stub(tasks_pb2_grpc.TasksStub)

    @property
    def images(self) -> images_pb2_grpc.ImagesStub:
        from .proto import images_pb2_grpc

        return self._stub(images_pb2_grpc.ImagesStub)

    @property
    def content(self) -> content_pb2_grpc.ContentStub:
        from .proto import content_pb2_grpc

        return self._stub(content_pb2_grpc.ContentStub)

    @property
    def snapshots(self) -> snapshots_pb2_grpc.SnapshotsStub:
        from .proto import snapshots_pb2_grpc

        return self._stub(snapshots_pb2_grpc.SnapshotsStub)

    @property
    def diff(self) -> diff_pb2_grpc.DiffStub:
        from .proto import diff_pb2_grpc

        return self._stub(diff_pb2_grpc.DiffStub)

    @property
    def leases(self) -> leases_pb2_grpc.LeasesStub:
        from .proto import leases_pb2_grpc

        return self._stub(leases_pb2_grpc.LeasesStub)

    @property
    def events(self) -> events_pb2_grpc.EventsStub:
        from .proto import events_pb2_grpc

        return self._stub(events_pb2_grpc.EventsStub)

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        self._stubs.clear()
        if channel is not None:
            await channel.close()

    @contextlib.contextmanager
    def errors(self, what: str, container: str | None = None, missing: str | None = None) -> Iterator[None]:
        """containerd's gRPC errors as orchestr's; what names the thing acted on, missing the NotFound text."""
        try:
            yield
        except grpc.RpcError as e:
            raise self.translate(e, what, container, missing) from None

    def translate(self, e: grpc.RpcError, what: str, container: str | None = None,
                  missing: str | None = None) -> RuntimeFailure:
        status = code(e)
        return self.failure(status.name if status is not None else None,
                            str(e.details() if hasattr(e, "details") else e), what, container, missing)

    def failure(self, status: str | None, details: str, what: str, container: str | None = None,
                missing: str | None = None) -> RuntimeFailure:
        """A call's status (its name: NOT_FOUND) and details as orchestr's error; what names the thing acted on,
        missing the NotFound text."""
        details = " ".join(details.split())
        where = dict(runtime=RUNTIME, container=container)
        if status == "UNAVAILABLE":
            if not os.path.exists(self.socket):
                details = f"there is no socket {self.socket}"
            return RuntimeUnavailable(f"cannot reach containerd at {self.socket}: {details}; is it running? "
                                      "(ORCHESTR_CONTAINERD_ADDRESS says where it listens)", **where)
        if status == "NOT_FOUND":
            return NotFound(missing or f"{what} not found", **where)
        if status == "DEADLINE_EXCEEDED":
            return Timeout(f"{what}: containerd did not answer in time: {details}", **where)
        if status in ("ALREADY_EXISTS", "FAILED_PRECONDITION"):
            return Conflict(f"{what}: {details}", **where)
        if status in ("INVALID_ARGUMENT", "UNIMPLEMENTED"):
            return TerminalFailure(f"{what}: {details}", **where)
        return RuntimeFailure(f"{what}: {details}", **where)


def code(e: BaseException) -> grpc.StatusCode | None:
    """The call's status; a deadline the server noticed first comes back as UNKNOWN "context deadline exceeded"."""
    if not isinstance(e, grpc.RpcError) or not hasattr(e, "code"):
        return None
    if e.code() == grpc.StatusCode.UNKNOWN and "context deadline exceeded" in str(e.details()):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return e.code()
