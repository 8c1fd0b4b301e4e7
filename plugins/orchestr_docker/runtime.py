"""The Docker Engine runtime: orchestr's verbs carried out by the engine, over the standard library's unix
sockets (engine.py) where it can, else through aiodocker.

The engine owns restarts of docker containers: orchestr has no daemon of its own and the engine is always
running, so a spec's restart policy is handed to the engine. Always becomes "unless-stopped" rather than
"always" so that `orchestr stop` sticks across engine restarts; orchestr's reconcile still starts exited
containers according to the policy on every apply.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal as signals
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestr.config import Config
from orchestr.containers import argv as resolve_argv
from orchestr.containers import volume_key, volumes
from orchestr.errors import Conflict, NotFound, RuntimeFailure, RuntimeUnavailable, TerminalFailure, Timeout, located
from orchestr.model import (
    EXEC_OUTPUT_LIMIT,
    L_NAMESPACE,
    Container,
    ContainerSpec,
    Event,
    ExecResult,
    HistoryEntry,
    Image,
    LogLine,
    Port,
    PullProgress,
    PullStatus,
    Resources,
    State,
    Stats,
)
from orchestr.runtime import Capabilities, EventDelivery, ExecOutput, ProgressCallback

from . import engine, mapping, streams

# anyio is imported by the verbs that wait with it: a one-off run in the foreground (oneoff.py) needs no event loop
if TYPE_CHECKING:
    import aiodocker
    import aiohttp
    from orchestr_native.network.services import Services

DEFAULT_HOST = "unix:///var/run/docker.sock"
SWARM_SERVICE = "com.docker.swarm.service.id"  # the label the engine puts on the containers of swarm's services
_CANNOT_CONNECT = 900  # aiodocker's status for a request that never reached the engine
_Call = tuple[str, str, "dict[str, str] | None", Any]  # an engine call: method, path, params, JSON body


class DockerRuntime:
    """orchestr's runtime on a Docker Engine: DOCKER_HOST, or the engine's default unix socket."""

    name = "docker"
    # The engine restarts containers by their policy and pushes events; it enforces limits, loads archives,
    # pauses, signals, samples and updates containers. A one-off run in the foreground needs no event loop (over
    # engine.py's blocking calls), but gets no terminal or standard input that way; its image export is not an OCI
    # layout on every engine version.
    capabilities = Capabilities(
        restarts=True, events=EventDelivery.PUSHED, limits=True, image_import=True, pause=True, signal=True,
        stats=True, update=True, service_ports=True, exec_tty=True, blocking_run=True,
    )

    def __init__(self, config: Config) -> None:
        self.config = config
        self.host = os.environ.get("DOCKER_HOST") or DEFAULT_HOST
        self._client: aiodocker.Docker | None = None

    @property
    def _docker(self) -> aiodocker.Docker:
        # made on first use: the client's HTTP session belongs to the event loop that runs it
        if self._client is None:
            import aiodocker  # here, not at the top: listing and inspecting do without it

            try:
                self._client = aiodocker.Docker(url=self.host)
            except ValueError as e:
                raise TerminalFailure(
                    f"DOCKER_HOST={self.host} is not an engine address (expected unix://PATH or tcp://HOST:PORT)",
                    runtime=self.name,
                ) from e
        return self._client

    def _unreachable(self, reason: str) -> str:
        return f"cannot reach the Docker Engine at {self.host}: {reason}; is dockerd running?"

    @contextlib.contextmanager
    def _errors(self, what: str, missing: str | None = None, container: str | None = None) -> Iterator[None]:
        """Turns the client's errors into orchestr's; what names the thing acted on, container its id."""
        with located(self.name, container):
            try:
                yield
            except engine.EngineError as e:
                self._raise(e.status, e.message, what, missing, e)
            except OSError as e:  # the light client could not reach the socket
                raise RuntimeUnavailable(self._unreachable(e.strerror or str(e))) from e
            except Exception as e:
                if "aiodocker" not in sys.modules:
                    raise
                import aiohttp
                from aiodocker.exceptions import DockerError

                if isinstance(e, DockerError):
                    if e.status == _CANNOT_CONNECT:
                        os_error = getattr(e.__context__, "os_error", None)
                        reason = getattr(os_error, "strerror", None) or str(e.message)
                        raise RuntimeUnavailable(self._unreachable(reason)) from e
                    self._raise(e.status, str(e.message), what, missing, e)
                if isinstance(e, aiohttp.ClientConnectionError):  # the engine went away in the middle of a stream
                    raise RuntimeUnavailable(self._unreachable(str(e) or type(e).__name__)) from e
                raise

    @staticmethod
    def _raise(status: int, message: str, what: str, missing: str | None, cause: Exception):
        message = " ".join(message.split())
        if status == 404:
            raise NotFound(missing or f"{what} not found") from cause
        if status == 409:
            raise Conflict(f"{what}: {message}") from cause
        if status == 400:  # the engine refuses the request itself: sending it again cannot help
            raise TerminalFailure(f"{what}: {message}") from cause
        raise RuntimeFailure(f"{what}: {message}") from cause

    async def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        return await self._call("GET", path, params)

    async def _call(self, method: str, path: str, params: dict[str, str] | None = None, body: Any = None) -> Any:
        """A call whose request and answer are JSON: over the light client when the engine is on a unix socket,
        so that a one-off `orchestr run` never imports aiohttp."""
        if self.host.startswith("unix://"):
            return await engine.request(self.host.removeprefix("unix://"), method, path, params, body)
        return await self._docker._query_json(path, method, params=params,
                                              data=None if body is None else json.dumps(body))

    @contextlib.asynccontextmanager
    async def _read(self, path: str, params: dict[str, str]) -> AsyncIterator[Any]:
        """A streamed answer's body (readline, readexactly), closed when left."""
        if self.host.startswith("unix://"):
            async with engine.stream(self.host.removeprefix("unix://"), "GET", path, params) as body:
                yield body
            return
        async with self._stream(path, params=params) as response:
            yield response.content

    @contextlib.asynccontextmanager
    async def _stream(self, path: str, method: str = "GET", **kw: Any) -> AsyncIterator[aiohttp.ClientResponse]:
        """A raw streamed response, closed when left: a stream given up early still holds its connection."""
        async with self._docker._query(path, method, timeout=None, **kw) as response:
            try:
                yield response
            finally:
                response.close()

    def _container(self, id: str) -> aiodocker.containers.DockerContainer:
        return self._docker.containers.container(id)

    # -- containers ---------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> Container:
        with located(self.name, spec.name):
            spec = replace(spec, volumes=volumes(spec))  # bind sources resolved: the engine binds what was checked
            calls = self._create_calls(spec, await self.image_inspect(spec.image))
        with self._create_errors(spec):
            for call in calls:
                created = await self._call(*call)
        return await self.inspect(created["Id"])

    def _create_calls(self, spec: ContainerSpec, image: dict[str, Any]) -> list[_Call]:
        """The engine calls (method, path, params, body) that make spec's container of image (its inspect): its
        named volumes first, then the container, whose answer holds its Id."""
        config = image.get("Config") or {}
        with located(self.name, spec.name):
            argv = resolve_argv(spec, config.get("Entrypoint"), config.get("Cmd"))
        named = {volume_key(spec.namespace, v.source or "") for v in spec.volumes if v.type == "volume"}
        # creating an existing volume returns it unchanged
        calls: list[_Call] = [
            ("POST", "volumes/create", None, {"Name": volume, "Labels": {L_NAMESPACE: spec.namespace}})
            for volume in sorted(named)]
        name = mapping.engine_name(spec.namespace, spec.name)
        return [*calls, ("POST", "containers/create", {"name": name}, mapping.create_body(spec, argv))]

    def _create_errors(self, spec: ContainerSpec) -> contextlib.AbstractContextManager[None]:
        return self._errors(f"container {spec.namespace}/{spec.name}", missing=f"image {spec.image} not found",
                            container=spec.name)

    def run_blocking(
        self, spec: ContainerSpec, *, output: Callable[[LogLine], None] | None = None, remove: bool = False,
        stdin: int | None = None, on_signal: str | None = None,
    ) -> tuple[Container, int] | None:
        """A one-off run to its end without an event loop (see oneoff.run); None, with nothing changed, for an
        image the engine does not have yet (pulled by the async verbs), a terminal or standard input (which would
        need a hijacked attach stream), or an engine that is not on a unix socket."""
        if spec.interactive or spec.tty or not self.host.startswith("unix://"):
            return None
        from . import oneoff

        return oneoff.run(self, spec, output, remove, on_signal)

    async def publish_service(
        self, namespace: str, service: str, ports: Sequence[Port], endpoints: Sequence[str],
    ) -> None:
        """The native runtime's service ports (orchestr_native.network.services) toward the containers' addresses
        on the engine's bridge: DNAT from the host, with route_localnet on that bridge for 127.0.0.1. Records are
        host-wide, as the engine's containers are."""
        import anyio

        with located(self.name, f"{namespace}/{service}"):
            await anyio.to_thread.run_sync(_publish, namespace, service, list(ports), list(endpoints))

    async def published_services(self, namespace: str) -> list[str]:
        return [r["service"] for r in _services().published(namespace)]

    async def start(self, id: str) -> None:
        with self._errors(f"container {id}", container=id):
            await self._call("POST", f"containers/{id}/start")

    async def stop(self, id: str, *, signal: str = "SIGTERM", timeout: float = 10.0) -> None:
        import anyio

        with self._errors(f"container {id}", container=id):
            if signal in ("SIGTERM", "TERM", "15"):
                # the engine's stop does exactly this, and does nothing to a stopped container
                await self._call("POST", f"containers/{id}/stop", {"t": str(math.ceil(timeout))})
                return
            if not (await self._get(f"containers/{id}/json"))["State"]["Running"]:
                return
            # a kill also tells the engine's restart policy to leave the container stopped
            if not await self._kill(id, signal):
                return
            with anyio.move_on_after(timeout) as grace:
                await self._wait(id)
            if grace.cancelled_caught and await self._kill(id, "SIGKILL"):
                await self._wait(id)

    async def _kill(self, id: str, signal: str) -> bool:
        """Send signal; False when the container was no longer running."""
        try:
            await self._call("POST", f"containers/{id}/kill", {"signal": signal})
        except Exception as e:
            if getattr(e, "status", None) == 409:  # EngineError or aiodocker's DockerError: not running
                return False
            raise
        return True

    async def _wait(self, id: str) -> dict:
        return await self._call("POST", f"containers/{id}/wait", {"condition": "not-running"})

    async def delete(self, id: str, *, force: bool = False) -> None:
        # named volumes outlive their containers, as with docker rm
        with self._errors(f"container {id}", container=id):
            await self._call("DELETE", f"containers/{id}", {"force": "1" if force else "0", "v": "0"})

    async def pause(self, id: str) -> None:
        with self._errors(f"container {id}", container=id):
            await self._call("POST", f"containers/{id}/pause")

    async def resume(self, id: str) -> None:
        with self._errors(f"container {id}", container=id):
            await self._call("POST", f"containers/{id}/unpause")

    async def signal(self, id: str, signal: str) -> None:
        # the engine answers 409 for a container that is not running
        with self._errors(f"container {id}", container=id):
            await self._call("POST", f"containers/{id}/kill", {"signal": str(signal)})

    async def stats(self, id: str) -> Stats:
        info = await self._show(id)
        if not info["State"]["Running"]:
            raise Conflict(f"container {id} is not running", runtime=self.name, container=id)
        with self._errors(f"container {id}", container=id):
            raw = await self._get(f"containers/{id}/stats", {"stream": "false", "one-shot": "true"})
        return mapping.stats_from_engine(raw, info["HostConfig"].get("Memory") or None)

    async def update(self, id: str, resources: Resources) -> None:
        body = mapping.update_body(resources)
        if not body:
            return
        with self._errors(f"container {id}", container=id):
            await self._call("POST", f"containers/{id}/update", body=body)

    async def _show(self, id: str) -> dict[str, Any]:
        with self._errors(f"container {id}", container=id):
            info = await self._get(f"containers/{id}/json")
        if L_NAMESPACE not in (info["Config"].get("Labels") or {}):
            raise NotFound(f"container {id} not found (the engine has it, but orchestr does not own it)",
                           runtime=self.name, container=id)
        return info

    async def inspect(self, id: str) -> Container:
        container = self._adopt(mapping.container_from_inspect(await self._show(id)))
        if container is None:
            raise NotFound(f"container {id} not found (it belongs to a swarm service)", runtime=self.name, container=id)
        return container

    def _adopt(self, container: Container) -> Container | None:
        """container as this runtime shows it, or None when it is not this runtime's: the containers of swarm's
        services are the swarm runtime's, even though the same engine runs them."""
        return None if SWARM_SERVICE in container.labels else container

    def _adopt_event(self, event: Event, attributes: dict[str, str]) -> Event | None:
        return None if SWARM_SERVICE in attributes else event

    async def list(self, namespace: str | None = None) -> list[Container]:
        label = L_NAMESPACE if namespace is None else f"{L_NAMESPACE}={namespace}"
        params = {"all": "1", "filters": json.dumps({"label": [label]})}
        with self._errors("containers"):
            # the raw listing: aiodocker's wrapper objects hide the fields a summary is made of
            items = await self._get("containers/json", params)
        found = [c for item in items if (c := self._adopt(mapping.container_from_summary(item))) is not None]
        # one call lists them all; only exited containers need a look each, for the exact exit and OOM kill
        exited = [i for i, c in enumerate(found) if c.state is State.EXITED]
        import asyncio  # here: a one-off run in the foreground has no event loop, and loads none

        details = await asyncio.gather(*(self._show_if_present(found[i].id) for i in exited))
        for i, info in zip(exited, details):
            if info is not None:
                found[i] = self._adopt(mapping.container_from_inspect(info)) or found[i]
        return found

    async def _show_if_present(self, id: str) -> dict[str, Any] | None:
        try:
            return await self._show(id)
        except NotFound:  # removed since it was listed
            return None

    async def logs(self, id: str, *, follow: bool = False, tail: int | None = None) -> AsyncIterator[LogLine]:
        tty = (await self._show(id))["Config"]["Tty"]
        params = {
            "stdout": "1",
            "stderr": "1",
            "follow": "1" if follow else "0",
            "timestamps": "1",
            "tail": "all" if tail is None else str(tail),
        }
        with self._errors(f"container {id}", container=id):
            # the raw stream: aiodocker's log reader merges stdout and stderr
            async with self._read(f"containers/{id}/logs", params) as content:
                async for line in streams.log_lines(streams.frames(content, tty)):
                    yield line

    async def exec(
        self, id: str, argv: Sequence[str], *, env: dict[str, str] | None = None, user: str | None = None,
        workdir: str | None = None, timeout: float | None = None, output: Callable[[LogLine], None] | None = None,
        output_limit: int = EXEC_OUTPUT_LIMIT,
    ) -> ExecResult:
        import anyio

        collected = ExecOutput(output, output_limit)
        with self._errors(f"container {id}", container=id):
            execution = await self._container(id).exec(
                list(argv), environment=env, user=user or "", workdir=workdir
            )
            with anyio.move_on_after(timeout) as deadline:
                async with execution.start(detach=False) as stream:
                    while (message := await stream.read_out()) is not None:
                        collected.add("stderr" if message.stream == 2 else "stdout", message.data)
            if deadline.cancelled_caught:
                await self._end_exec(id, execution)
                raise Timeout(f"container {id}: {argv[0]} ran past its {timeout:g}s deadline and was killed")
            # the engine records the exit code before it closes the output streams
            info = await execution.inspect()
        return collected.result(info["ExitCode"])

    async def exec_terminal(self, id: str, argv: Sequence[str], *, stdin: int | None, stdout: int,
                            env: dict[str, str] | None = None, user: str | None = None,
                            workdir: str | None = None) -> int:
        import anyio
        from aiodocker.exceptions import DockerError

        from orchestr.terminal import relay

        with self._errors(f"container {id}", container=id):
            execution = await self._container(id).exec(list(argv), stdin=stdin is not None, tty=True,
                                                       environment=env, user=user or "", workdir=workdir)
            async with execution.start(detach=False) as stream:

                async def receive() -> bytes:
                    message = await stream.read_out()
                    return b"" if message is None else message.data

                async def end_input() -> None:  # the terminal's end-of-file character, as ^D typed
                    await stream.write_in(b"\x04")

                async def resize(rows: int, columns: int) -> None:
                    # the engine takes a size only once the command runs (API 1.41 has no ConsoleSize at
                    # creation): asked again a few times meanwhile, as the docker CLI does
                    for attempt in range(10):
                        try:
                            await execution.resize(h=rows, w=columns)
                            return
                        except DockerError:
                            await anyio.sleep(0.01 * (attempt + 1))

                await relay(stdin, stdout, receive=receive, send=stream.write_in, end_input=end_input, resize=resize)
            # the engine records the exit code before it closes the output stream
            return int((await execution.inspect())["ExitCode"])

    async def _end_exec(self, id: str, execution: aiodocker.execs.Exec) -> None:
        """Kills an exec'd command and what it started. The engine has no verb for that: its processes are
        killed on this host, so only an engine on a unix socket here can have them killed."""
        import anyio

        info = await execution.inspect()
        if not info.get("Running"):
            return
        if not self.host.startswith("unix://"):
            raise Timeout(f"container {id}: an exec ran past its deadline; the engine at {self.host} is not on "
                          "this host, so the command could not be killed")
        full_id = (await self._show(id))["Id"]
        await anyio.to_thread.run_sync(_kill_tree, info["Pid"], full_id)
        with anyio.move_on_after(10):  # the engine notices the end as the process is reaped
            while (await execution.inspect()).get("Running"):
                await anyio.sleep(0.05)

    async def wait(self, id: str) -> int:
        with self._errors(f"container {id}", container=id):
            result = await self._wait(id)
        return int(result["StatusCode"])

    def events(self) -> AsyncIterator[Event]:
        # from the moment of this call, not of the first iteration: the engine replays what happened between
        return self._events(time.time())

    async def _events(self, since: float) -> AsyncIterator[Event]:
        filters = {"type": ["container"], "label": [L_NAMESPACE], "event": list(mapping.EVENT_STATES)}
        params = {"since": f"{since:.9f}", "filters": json.dumps(filters)}
        with self._errors("engine events"):
            # the raw stream: aiodocker's subscription shares one listener task per client
            async with self._read("events", params) as content:
                async for message in streams.messages(content):
                    if event := mapping.event_from_engine(message):
                        attributes = (message.get("Actor") or {}).get("Attributes") or {}
                        if event := self._adopt_event(event, attributes):
                            yield event

    async def reattach(self) -> list[Container]:
        # the engine keeps every container's state itself: nothing is stale on orchestr's side
        return await self.list()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # -- images -------------------------------------------------------------------------

    async def ensure_image(self, ref: str, progress: ProgressCallback | None = None) -> Image:
        try:
            return mapping.image_from_inspect(await self.image_inspect(ref))
        except NotFound:
            return await self.pull(ref, progress)

    async def pull(self, ref: str, progress: ProgressCallback | None = None) -> Image:
        with self._errors(f"cannot pull image {ref}", missing=f"image {ref} not found in its registry"):
            async for message in self._docker.images.pull(ref, stream=True):
                _raise_stream_error(message, f"cannot pull image {ref}")
                if progress and (report := mapping.progress(ref, message)):
                    progress(report)
        if progress:
            progress(PullProgress(ref, None, PullStatus.DONE))
        return mapping.image_from_inspect(await self.image_inspect(ref))

    async def import_image(self, path: Path, progress: ProgressCallback | None = None) -> list[Image]:
        what = f"cannot import image archive {path}"
        try:
            archive = Path(path).open("rb")
        except FileNotFoundError:
            raise NotFound(f"image archive {path} not found") from None
        except OSError as e:
            raise RuntimeFailure(f"{what}: {e.strerror}") from e
        loaded: list[str] = []
        loading: dict[str, int | None] = {}
        with archive, self._errors(what):
            # the raw request: aiodocker's import wrapper cannot ask for progress (quiet=0); the client
            # sends the open file in chunks, so an archive is never read whole into memory
            async with self._stream(
                "images/load", "POST", params={"quiet": "0"}, data=archive, chunked=True,
                headers={"Content-Type": "application/x-tar"},
            ) as response:
                async for message in streams.messages(response.content):
                    _raise_stream_error(message, what)
                    for line in (message.get("stream") or "").splitlines():
                        for prefix in ("Loaded image: ", "Loaded image ID: "):
                            if line.startswith(prefix):
                                loaded.append(line.removeprefix(prefix).strip())
                    if progress and (report := mapping.progress(str(path), message)):
                        progress(report)
                        if report.layer:
                            loading[report.layer] = report.total
        if progress:  # a load tells no more of a layer once it is read: each is done with the load
            for layer, total in loading.items():
                progress(PullProgress(str(path), layer, PullStatus.DONE, total or 0, total))
            progress(PullProgress(str(path), None, PullStatus.DONE))
        images: dict[str, Image] = {}
        for ref in loaded:
            image = mapping.image_from_inspect(await self.image_inspect(ref))
            images.setdefault(image.id, image)
        return list(images.values())

    async def images(self) -> list[Image]:
        with self._errors("images"):
            return [mapping.image_from_summary(item) for item in await self._get("images/json")]

    async def image_inspect(self, ref: str) -> dict:
        with self._errors(f"image {ref}"):
            return await self._get(f"images/{ref}/json")

    async def image_history(self, ref: str) -> list[HistoryEntry]:
        with self._errors(f"image {ref}"):
            return [mapping.history_entry(item) for item in await self._get(f"images/{ref}/history")]

    async def image_remove(self, ref: str, *, force: bool = False) -> None:
        with self._errors(f"image {ref}"):
            await self._call("DELETE", f"images/{ref}", {"force": "1" if force else "0"})

    async def image_prune(self) -> list[str]:
        with self._errors("images"):
            report = await self._call("POST", "images/prune", {"filters": json.dumps({"dangling": ["true"]})})
        return [item["Deleted"] for item in report.get("ImagesDeleted") or () if item.get("Deleted")]


def _kill_tree(pid: int, container_id: str) -> None:
    """SIGKILLs pid and its descendants that belong to the container: stopped first, so that none forks
    behind the walk. A pid whose cgroup does not name the container is not the engine's process: left alone."""
    stopped: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            if container_id not in Path(f"/proc/{p}/cgroup").read_text():
                continue
            os.kill(p, signals.SIGSTOP)
            stopped.append(p)
            children = Path(f"/proc/{p}/task")
            todo += [int(c) for task in children.iterdir() for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
    for p in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signals.SIGKILL)


def _raise_stream_error(message: dict, what: str) -> None:
    """The engine reports a failed pull or load inside a successful response."""
    if error := message.get("error") or (message.get("errorDetail") or {}).get("message"):
        raise RuntimeFailure(f"{what}: {' '.join(str(error).split())}")


SERVICES = "/run/orchestr/docker/services"  # the records of the engine's service ports


def _services() -> Services:
    from orchestr_native.network.services import Services

    return Services(Path(SERVICES), "docker", helpers=True)


def _publish(namespace: str, service: str, ports: list[Port], endpoints: list[str]) -> None:
    from orchestr_native.network import services

    bridges = sorted(b for b in {_bridge_of(ip) for ip in endpoints} if b)
    with services.locked():
        _services().publish(namespace, service, ports, endpoints, bridges)


def _bridge_of(ip: str) -> str | None:
    """The host's interface toward ip (the engine's bridge of the container), as the kernel routes it."""
    import subprocess

    done = subprocess.run(["ip", "-4", "-o", "route", "get", ip], capture_output=True, text=True, timeout=10)
    words = done.stdout.split()
    return words[words.index("dev") + 1] if "dev" in words[:-1] else None
