"""A one-off container run to its end without an event loop (`orchestr run` in the foreground): made, started,
its output handed on, signals to orchestr passed on, removed afterwards when asked; over engine.py's blocking
calls, so that such a run loads neither asyncio nor the engine client."""

from __future__ import annotations

import contextlib
import functools
import math
import signal as signals
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from orchestr.containers import volumes
from orchestr.errors import Interrupted, NotFound, located
from orchestr.model import Container, ContainerSpec, LogLine
from orchestr.signalhold import SignalHold

from . import engine, mapping, streams

if TYPE_CHECKING:
    from .runtime import DockerRuntime


def run(rt: DockerRuntime, spec: ContainerSpec, output: Callable[[LogLine], None] | None, remove: bool,
        on_signal: str | None) -> tuple[Container, int] | None:
    """Client.run of spec in the foreground, on rt's engine at its unix socket; None, with nothing changed, when
    the engine does not have the image."""
    socket_path = rt.host.removeprefix("unix://")

    def call(method: str, path: str, params: dict[str, str] | None = None, body: Any = None) -> Any:
        return engine.call(socket_path, method, path, params, body)

    with located(rt.name, spec.name):
        spec = replace(spec, volumes=volumes(spec))
    # A command replaces the image's entrypoint and cmd whole: then the image need not be read before the create
    # (a round trip), only after a create that failed, to tell a missing image (None) or say what is wrong with
    # it as ever. Volumes to make first would change something before that, so those runs read it first.
    read_first = not spec.command or any(v.type == "volume" for v in spec.volumes)
    image: dict[str, Any] | None = _image(rt, call, spec) if read_first else {}
    if image is None:
        return None
    calls = rt._create_calls(spec, image)
    with SignalHold(on_signal) as hold:
        with rt._create_errors(spec):
            try:
                for request in calls:
                    created = call(*request)
            except engine.EngineError:
                if not read_first and _image(rt, call, spec) is None:
                    return None
                raise
        id = created["Id"]
        try:
            with rt._errors(f"container {id}", container=id):
                return _run(call, socket_path, id, spec, output, hold)
        except Interrupted as e:
            if remove:
                with rt._errors(f"container {id}", container=id):
                    _stop(call, id, spec.stop_grace_period)
            raise Interrupted.one_off(e.signal, spec.name, remove) from None
        finally:
            hold.close()
            if remove:
                with rt._errors(f"container {id}", container=id):
                    call("DELETE", f"containers/{id}", {"force": "1", "v": "0"})


def _image(rt: DockerRuntime, call: Callable[..., Any], spec: ContainerSpec) -> dict[str, Any] | None:
    """The engine's inspect of spec's image; None when it does not have it."""
    try:
        with rt._errors(f"image {spec.image}"):
            image: dict[str, Any] = call("GET", f"images/{spec.image}/json")
            return image
    except NotFound:
        return None


def _run(call: Callable[..., Any], socket_path: str, id: str, spec: ContainerSpec,
         output: Callable[[LogLine], None] | None, hold: SignalHold) -> tuple[Container, int]:
    """run(), from the container made to its end: its state then, and its exit code. Its output comes from an
    attach made before the start, as docker run's does: a log read after it may miss what a container that
    ends at once wrote (the engine can close the log before a following reader has read its end)."""
    if output is None:
        call("POST", f"containers/{id}/start")
        hold.attach(lambda sig: _forward(call, id, spec.stop_grace_period, hold, sig))
    else:
        from orchestr.logfile import now

        params = {"stream": "1", "stdout": "1", "stderr": "1"}
        # the stream ends once the container has; its frames carry no time: the time they come is theirs
        with engine.open_stream(socket_path, "POST", f"containers/{id}/attach", params) as body:
            call("POST", f"containers/{id}/start")
            hold.attach(lambda sig: _forward(call, id, spec.stop_grace_period, hold, sig))
            stamped = ((stream, f"{now()} ".encode() + data) for stream, data in body.frames(tty=False))
            for line in streams.log_lines_blocking(stamped):
                output(line)
    code = int(call("POST", f"containers/{id}/wait", {"condition": "not-running"})["StatusCode"])
    return mapping.container_from_inspect(call("GET", f"containers/{id}/json")), code


def _forward(call: Callable[..., Any], id: str, grace: float, hold: SignalHold, sig: int) -> None:
    """Passes sig on as the runtime's stop with it does: SIGTERM through the engine's stop (the image's stop
    signal, SIGKILL after grace), in the background, so that output goes on meanwhile; another signal sent,
    and SIGKILL after grace unless the run has ended."""
    if sig == signals.SIGTERM:
        import threading

        threading.Thread(target=_quietly, args=(_stop, call, id, grace), daemon=True).start()
        return
    kill = functools.partial(_quietly, call, "POST", f"containers/{id}/kill")
    if kill({"signal": signals.Signals(sig).name}):
        hold.after(grace, lambda: kill({"signal": "SIGKILL"}))


def _stop(call: Callable[..., Any], id: str, grace: float) -> None:
    call("POST", f"containers/{id}/stop", {"t": str(math.ceil(grace))})


def _quietly(fn: Callable[..., Any], *args: Any) -> bool:
    """fn(*args); False when the engine refused it or could not be reached (the container has ended meanwhile,
    or is going)."""
    with contextlib.suppress(engine.EngineError, OSError):
        fn(*args)
        return True
    return False
