"""The gRPC connection to a CRI runtime: where it is, the two services' stubs, and its errors in orchestr's terms."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import grpc

from orchestr.errors import Conflict, NotFound, RuntimeFailure, RuntimeUnavailable, TerminalFailure, Timeout

from .proto import cri_pb2 as pb
from .proto import cri_pb2_grpc as rpc

RUNTIME = "cri"
CONTAINERD = "unix:///run/containerd/containerd.sock"
CRIO = "unix:///var/run/crio/crio.sock"
CRICTL_CONFIG = Path("/etc/crictl.yaml")
# ExecSync answers with the whole output at once: room for exec's default 16 MiB of each stream and more.
MAX_MESSAGE = 80 << 20


def endpoint() -> str:
    """ORCHESTR_CRI_ENDPOINT; else the runtime-endpoint of crictl's config (/etc/crictl.yaml), the file CRI users
    already keep; else containerd's socket."""
    if env := os.environ.get("ORCHESTR_CRI_ENDPOINT"):
        return env
    with contextlib.suppress(OSError, ValueError, AttributeError):
        import yaml

        configured = (yaml.safe_load(CRICTL_CONFIG.read_text()) or {}).get("runtime-endpoint")
        if isinstance(configured, str) and configured:
            return configured
    return CONTAINERD


def target(address: str) -> str:
    """The gRPC target of an endpoint: unix://PATH (or a bare absolute path) for a socket, tcp://HOST:PORT."""
    if address.startswith("/"):
        return f"unix://{address}"
    if address.startswith("unix://") or address.startswith("unix:"):
        return address
    if address.startswith("tcp://"):
        return address.removeprefix("tcp://")
    raise TerminalFailure(f"ORCHESTR_CRI_ENDPOINT={address}: expected unix:///path/to/socket (containerd: "
                          f"{CONTAINERD}, CRI-O: {CRIO}) or tcp://HOST:PORT", runtime=RUNTIME)


class Connection:
    """One channel to the runtime, made on first use (it belongs to the event loop that uses it)."""

    def __init__(self, address: str):
        self.address = address
        self._channel: grpc.aio.Channel | None = None
        self._runtime: rpc.RuntimeServiceStub | None = None
        self._images: rpc.ImageServiceStub | None = None
        self._version: str | None = None

    async def runtime_name(self) -> str:
        """The runtime's name, as its Version call tells it (containerd, cri-o, ...)."""
        if self._version is None:
            with self.errors("the CRI runtime's version"):
                self._version = (await self.runtime.Version(pb.VersionRequest(), timeout=30)).runtime_name
        return self._version

    def _open(self) -> None:
        options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.enable_http_proxy", 0)]
        self._channel = grpc.aio.insecure_channel(target(self.address), options=options)
        self._runtime = rpc.RuntimeServiceStub(self._channel)
        self._images = rpc.ImageServiceStub(self._channel)

    @property
    def runtime(self) -> rpc.RuntimeServiceStub:
        if self._runtime is None:
            self._open()
        return self._runtime  # type: ignore[return-value]

    @property
    def images(self) -> rpc.ImageServiceStub:
        if self._images is None:
            self._open()
        return self._images  # type: ignore[return-value]

    def sync_runtime(self) -> tuple[grpc.Channel, rpc.RuntimeServiceStub]:
        """A blocking channel and stub, for the rare call that cannot wait for the event loop (events' first
        snapshot); close the channel after use."""
        channel = grpc.insecure_channel(target(self.address), options=[("grpc.enable_http_proxy", 0)])
        return channel, rpc.RuntimeServiceStub(channel)

    async def close(self) -> None:
        channel, self._channel, self._runtime, self._images = self._channel, None, None, None
        if channel is not None:
            await channel.close()

    @contextlib.contextmanager
    def errors(self, what: str, container: str | None = None, missing: str | None = None) -> Iterator[None]:
        """The runtime's gRPC errors as orchestr's; what names the thing acted on, missing the NotFound text."""
        try:
            yield
        except grpc.RpcError as e:
            raise self.translate(e, what, container, missing) from None

    def translate(self, e: grpc.RpcError, what: str, container: str | None = None,
                  missing: str | None = None) -> RuntimeFailure:
        code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
        details = " ".join(str(e.details() if hasattr(e, "details") else e).split())
        where = dict(runtime=RUNTIME, container=container)
        if code == grpc.StatusCode.UNAVAILABLE:
            socket = self.address.removeprefix("unix://").removeprefix("unix:")
            if self.address.startswith(("unix:", "/")) and not os.path.exists(socket):
                details = f"there is no socket {socket}"
            return RuntimeUnavailable(f"cannot reach the CRI runtime at {self.address}: {details}; is it running? "
                                      "(ORCHESTR_CRI_ENDPOINT says where it listens)", **where)
        if code == grpc.StatusCode.NOT_FOUND:
            return NotFound(missing or f"{what} not found", **where)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return Timeout(f"{what}: the CRI runtime did not answer in time: {details}", **where)
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return TerminalFailure(f"{what}: the CRI runtime at {self.address} does not implement this call "
                                   f"({details})", **where)
        # a name taken: containerd says "... is reserved for <id>", CRI-O "... name is reserved"
        if code in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION) or "is reserved" in details:
            return Conflict(f"{what}: {details}", **where)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return TerminalFailure(f"{what}: {details}", **where)
        return RuntimeFailure(f"{what}: {details}", **where)


def code(e: grpc.RpcError) -> grpc.StatusCode | None:
    return e.code() if hasattr(e, "code") else None
