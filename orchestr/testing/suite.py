"""The behaviour every runtime must show, run against each runtime the plugin is given.

Each test skips only what the runtime's declared capabilities say it lacks, and the skip names the capability.
Containers run the kit's busybox image (a runtime without images runs the same commands on its host), so the
commands here stay within what busybox and a plain Debian host both have. Nothing here asserts a timing: every
deadline only bounds a wait for what must happen. The kit fixture deletes what each test made, even when it fails.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import secrets
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

from orchestr.errors import Conflict, NotFound, RuntimeFailure, TerminalFailure, Timeout
from orchestr.model import (
    L_NAMESPACE,
    Container,
    Event,
    EventAction,
    ExecResult,
    HistoryEntry,
    Image,
    LogLine,
    Resources,
    State,
    Stats,
)
from orchestr.runtime import OPTIONAL, Capabilities, ContainerRuntime, ImageStore, Runtime

from . import host, images
from .plugin import KIT_LABEL, Kit

pytestmark = pytest.mark.anyio

# Ends at once on SIGTERM with a code of its own (a shell as pid 1 would ignore a signal it does not trap); says
# ready once its trap is set, so that a signal sent after that line is never too early (see ready()).
TERMINABLE = ("sh", "-c", "trap 'exit 3' TERM; echo ready; sleep 3600 & wait")
MiB = 1 << 20
BOUND = 60  # seconds: only a bound on a wait for what must happen, never a measurement
TEST_BOUND = 300  # seconds: a bound on a whole test


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # engine clients such as aiohttp run on asyncio only


@contextlib.contextmanager
def within(what: str, seconds: float = BOUND) -> Iterator[None]:
    """Fails the test, saying what did not happen, when the block runs past seconds."""
    with anyio.move_on_after(seconds) as scope:
        yield
    if scope.cancelled_caught:
        pytest.fail(f"{what} did not happen within {seconds:g}s", pytrace=False)


async def eventually(what: str, check) -> None:
    with within(what):
        while not await check():
            await anyio.sleep(0.05)


async def wait(kit: Kit, id: str) -> int:
    with within(f"container {id} ending"):
        return await kit.runtime.wait(id)


async def output(kit: Kit, id: str, **kw: Any) -> dict[str, list[bytes]]:
    """The container's log lines by stream."""
    lines: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
    with within(f"the logs of {id} ending"):
        async for line in kit.runtime.logs(id, **kw):
            assert isinstance(line, LogLine) and line.stream in lines, line
            lines[line.stream].append(line.data)
    return lines


async def ready(kit: Kit, name: str, *command: str, **fields: Any) -> Container:
    """Runs a container whose command says `ready` once its traps are set, and returns once it has."""
    c = await kit.run(name, *command, **fields)
    await eventually(f"{name} saying ready", lambda: _logged(kit, c.id, b"ready\n"))
    return c


async def _logged(kit: Kit, id: str, line: bytes) -> bool:
    return line in (await output(kit, id))["stdout"]


def raised(kit: Kit, info: pytest.ExceptionInfo, kind: type[RuntimeFailure]) -> RuntimeFailure:
    """The error, checked to be kind and to name the runtime it came from."""
    error = info.value
    assert isinstance(error, kind), f"{type(error).__name__}: {error} is no {kind.__name__}"
    assert error.runtime == kit.runtime.name, f"{type(error).__name__}({error}) names runtime {error.runtime!r}"
    return error


# -- what a runtime declares -----------------------------------------------------------------------------------
def _parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


async def test_runtime_declares_its_name_capabilities_and_verbs(kit: Kit, runtime_name: str):
    rt = kit.runtime
    assert rt.name == runtime_name
    assert isinstance(rt.capabilities, Capabilities)
    assert isinstance(rt, ContainerRuntime) and isinstance(rt, ImageStore) and isinstance(rt, Runtime)
    verbs = {name: proto for proto in (ContainerRuntime, ImageStore) for name, _ in
             inspect.getmembers(proto, inspect.isfunction) if not name.startswith("_")}
    for capability, proto in OPTIONAL.items():
        if getattr(rt.capabilities, capability):
            assert isinstance(rt, proto), f"declares {capability} but lacks {proto.__name__}'s verbs"
            verbs.update({name: proto for name, _ in inspect.getmembers(proto, inspect.isfunction)
                          if not name.startswith("_")})
    for verb, proto in verbs.items():
        assert _parameters(getattr(type(rt), verb)) == _parameters(getattr(proto, verb)), f"{verb}'s parameters"


# -- lifecycle -------------------------------------------------------------------------------------------------
async def test_create_start_stop_delete(kit: Kit):
    rt = kit.runtime
    spec = kit.spec("life", *TERMINABLE, labels={"kit.example/role": "life"})
    created = await kit.create(spec)
    assert (created.name, created.namespace, created.runtime, created.state) == ("life", kit.namespace, rt.name,
                                                                                 State.CREATED)
    assert created.labels == spec.labels and created.image == kit.image
    assert (await rt.inspect(created.id)).state is State.CREATED
    assert [c.id for c in await rt.list(kit.namespace)] == [created.id]

    await rt.start(created.id)
    await eventually("life saying ready", lambda: _logged(kit, created.id, b"ready\n"))
    running = await rt.inspect(created.id)
    assert running.state is State.RUNNING and running.pid and running.pid > 0 and running.exit_code is None
    await rt.start(created.id)  # starting a running container changes nothing
    assert (await rt.inspect(created.id)).pid == running.pid

    await rt.stop(created.id, timeout=30)
    stopped = await rt.inspect(created.id)
    assert stopped.state is State.EXITED and stopped.exit_code == 3 and stopped.pid is None
    await rt.stop(created.id, timeout=30)  # stopping a stopped container is a no-op
    assert (await rt.inspect(created.id)).state is State.EXITED

    await rt.delete(created.id)
    with pytest.raises(NotFound):
        await rt.inspect(created.id)
    assert await rt.list(kit.namespace) == []


async def test_a_taken_name_is_a_conflict(kit: Kit):
    await kit.create(kit.spec("twice", *TERMINABLE))
    with pytest.raises(Conflict) as info:
        await kit.create(kit.spec("twice", *TERMINABLE))
    raised(kit, info, Conflict)
    assert len(await kit.runtime.list(kit.namespace)) == 1


@pytest.mark.parametrize("code", [0, 7])
async def test_exit_codes(kit: Kit, code: int):
    c = await kit.run(f"exit-{code}", "sh", "-c", f"exit {code}")
    assert await wait(kit, c.id) == code
    ended = await kit.runtime.inspect(c.id)
    assert ended.state is State.EXITED and ended.exit_code == code
    assert await wait(kit, c.id) == code  # waiting on an exited container returns at once


async def test_stop_signals_and_honours_the_grace_period(kit: Kit):
    c = await ready(kit, "polite", *TERMINABLE)
    await kit.runtime.stop(c.id, timeout=60)
    assert (await kit.runtime.inspect(c.id)).exit_code == 3  # its trap ran: not killed when the grace began


async def test_stop_with_another_signal(kit: Kit):
    # in the foreground: a background command of a shell without job control ignores SIGINT
    c = await ready(kit, "on-int", "sh", "-c", "trap 'exit 4' INT; trap '' TERM; echo ready; while :; do sleep 1; done")
    await kit.runtime.stop(c.id, signal="SIGINT", timeout=60)
    assert (await kit.runtime.inspect(c.id)).exit_code == 4


async def test_stop_kills_after_the_grace_period(kit: Kit):
    c = await ready(kit, "stubborn", "sh", "-c", "trap '' TERM; echo ready; sleep 3600 & wait")
    await kit.runtime.stop(c.id, timeout=1)
    ended = await kit.runtime.inspect(c.id)
    assert ended.state is State.EXITED and ended.exit_code == 128 + signal.SIGKILL


async def test_signal_reaches_the_main_process_which_keeps_running(kit: Kit):
    kit.require("signal")
    rt = kit.runtime
    script = "trap 'echo got-hup' HUP; trap 'exit 5' USR1; echo ready; while :; do sleep 1 & wait $!; done"
    c = await ready(kit, "signalled", "sh", "-c", script)
    await rt.signal(c.id, "SIGHUP")
    await eventually("the trap's line after SIGHUP", lambda: _logged(kit, c.id, b"got-hup\n"))
    assert (await rt.inspect(c.id)).state is State.RUNNING
    await rt.signal(c.id, str(int(signal.SIGUSR1)))  # a number names a signal too
    assert await wait(kit, c.id) == 5
    with pytest.raises(Conflict) as info:
        await rt.signal(c.id, "SIGHUP")
    raised(kit, info, Conflict)


async def test_pause_and_resume(kit: Kit):
    kit.require("pause")
    rt = kit.runtime
    c = await ready(kit, "frozen", *TERMINABLE)
    await rt.pause(c.id)
    assert (await rt.inspect(c.id)).state is State.PAUSED
    assert [x.state for x in await rt.list(kit.namespace)] == [State.PAUSED]
    await rt.resume(c.id)
    resumed = await rt.inspect(c.id)
    assert resumed.state is State.RUNNING and resumed.pid == c.pid
    assert (await rt.exec(c.id, ["echo", "awake"])).stdout == b"awake\n"
    await rt.pause(c.id)
    await rt.stop(c.id, timeout=1)  # a paused container stops too
    assert (await rt.inspect(c.id)).state is State.EXITED


async def test_pause_right_after_start(kit: Kit):
    kit.require("pause")  # as an apply of a service with paused: true does, while the container may still be forking
    rt = kit.runtime
    c = await kit.run("paused-early", *TERMINABLE)
    with within("pause returning"):
        await rt.pause(c.id)
    assert (await rt.inspect(c.id)).state is State.PAUSED
    with within("resume returning"):
        await rt.resume(c.id)
    await eventually("paused-early saying ready after resume", lambda: _logged(kit, c.id, b"ready\n"))
    assert (await rt.inspect(c.id)).state is State.RUNNING


# -- limits ----------------------------------------------------------------------------------------------------
async def test_limits_are_set_in_the_containers_own_cgroup(kit: Kit):
    kit.require("limits")
    c = await kit.run("limited", *TERMINABLE, resources=Resources(cpus=0.5, memory=64 * MiB, pids=64))
    seen = host.limits(c.pid)
    assert (seen.cpus, seen.memory, seen.pids) == (0.5, 64 * MiB, 64), seen
    mine = host.cgroup_dirs("self")
    theirs = host.cgroup_dirs(c.pid)
    for controller in host.CONTROLLERS:
        if controller in theirs:
            assert theirs[controller] != mine.get(controller), f"the {controller} cgroup is the test's own"


async def test_nothing_is_left_after_delete(kit: Kit):
    rt = kit.runtime
    limited = bool(rt.capabilities.limits)
    c = await kit.run("gone", *TERMINABLE, resources=Resources(memory=64 * MiB, pids=64) if limited else Resources())
    files = host.limits(c.pid).files if limited else ()  # the container's cgroups, which delete must remove
    assert not limited or files, "no cgroup file of the container's was found"
    await rt.delete(c.id, force=True)
    assert await rt.list(kit.namespace) == []
    assert c.id not in {x.id for x in await rt.list()}
    with pytest.raises(NotFound):
        await rt.inspect(c.id)
    left = [str(f.parent) for f in files if f.parent.exists()]
    assert not left, f"cgroups left after delete: {left}"


# -- logs ------------------------------------------------------------------------------------------------------
async def test_logs_keep_stdout_and_stderr_apart(kit: Kit):
    c = await kit.run("streams", "sh", "-c", "echo out1; echo err1 >&2; echo out2; printf partial")
    assert await wait(kit, c.id) == 0
    lines = await output(kit, c.id)
    assert lines == {"stdout": [b"out1\n", b"out2\n", b"partial"], "stderr": [b"err1\n"]}


async def test_logs_tail(kit: Kit):
    c = await kit.run("counter", "sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done")
    await wait(kit, c.id)
    assert (await output(kit, c.id, tail=2))["stdout"] == [b"line4\n", b"line5\n"]
    assert (await output(kit, c.id, tail=10))["stdout"] == [f"line{i}\n".encode() for i in range(1, 6)]
    assert (await output(kit, c.id, tail=0))["stdout"] == []


async def test_logs_follow_until_the_container_exits(kit: Kit):
    flag = f"/tmp/orchestr-conformance-{secrets.token_hex(6)}"  # the container removes it as it ends
    script = f"echo first; while [ ! -e {flag} ]; do sleep 0.05; done; rm -f {flag}; echo second; exit 2"
    c = await kit.run("follower", "sh", "-c", script)
    seen: list[bytes] = []
    with within("logs(follow=True) ending after the container exited"):
        async for line in kit.runtime.logs(c.id, follow=True):
            seen.append(line.data)
            if line.data == b"first\n":  # only now may the container go on
                assert (await kit.runtime.exec(c.id, ["touch", flag])).exit_code == 0
    assert seen == [b"first\n", b"second\n"]
    assert (await kit.runtime.inspect(c.id)).state is State.EXITED


# -- exec ------------------------------------------------------------------------------------------------------
async def test_exec_exit_code_and_output(kit: Kit):
    c = await kit.run("exec", *TERMINABLE)
    result = await kit.runtime.exec(c.id, ["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert isinstance(result, ExecResult)
    assert (result.exit_code, result.stdout, result.stderr) == (7, b"out\n", b"err\n")


async def test_exec_sees_the_containers_env(kit: Kit):
    c = await kit.run("exec-env", *TERMINABLE, env={"FROM_SPEC": "spec"})
    assert (await kit.runtime.exec(c.id, ["sh", "-c", "echo $FROM_SPEC"])).stdout == b"spec\n"


async def test_exec_env_user_and_workdir(kit: Kit):
    kit.require("exec_options")
    rt = kit.runtime
    c = await kit.run("exec-opts", *TERMINABLE, env={"FROM_SPEC": "spec"})
    env = await rt.exec(c.id, ["sh", "-c", "echo $FROM_SPEC $FROM_EXEC"], env={"FROM_EXEC": "exec"})
    assert env.stdout == b"spec exec\n"
    user = await rt.exec(c.id, ["sh", "-c", "id -u; id -g"], user="1000:1000")
    assert user.stdout == b"1000\n1000\n", user
    workdir = await rt.exec(c.id, ["pwd"], workdir="/tmp")
    assert workdir.stdout == b"/tmp\n"


async def test_exec_options_a_runtime_cannot_honour_are_refused(kit: Kit):
    if kit.runtime.capabilities.exec_options:
        pytest.skip(f"{kit.runtime.name} declares the 'exec_options' capability: it honours them")
    c = await kit.run("exec-no-opts", *TERMINABLE)
    for option in ({"env": {"FROM_EXEC": "exec"}}, {"user": "1000:1000"}, {"workdir": "/tmp"}):
        with pytest.raises(TerminalFailure) as info:
            await kit.runtime.exec(c.id, ["true"], **option)
        raised(kit, info, TerminalFailure)


async def test_exec_with_a_terminal_reads_what_is_typed_and_gives_the_exit_code(kit: Kit):
    kit.require("exec_tty")
    c = await kit.run("exec-tty", *TERMINABLE)
    typed_r, typed_w = os.pipe()
    shown_r, shown_w = os.pipe()
    try:
        os.write(typed_w, b"hello\n")
        os.close(typed_w)  # the end of input: the runtime passes it on as the terminal's end-of-file
        typed_w = -1
        script = "[ -t 0 ] && [ -t 1 ] && read line && echo \"got $line\" && ! read more && exit 6"
        code = await kit.runtime.exec_terminal(c.id, ["sh", "-c", script], stdin=typed_r,  # type: ignore[attr-defined]
                                               stdout=shown_w)
        os.close(shown_w)
        shown_w = -1
        shown = b""
        while chunk := os.read(shown_r, 65536):
            shown += chunk
        assert code == 6, shown
        assert b"got hello\r\n" in shown, shown  # a terminal's line ends
    finally:
        for fd in (typed_r, typed_w, shown_r, shown_w):
            if fd >= 0:
                os.close(fd)


async def test_exec_timeout_raises_and_kills_the_command(kit: Kit):
    rt = kit.runtime
    c = await kit.run("exec-timeout", *TERMINABLE)
    argv = ["sleep", str(100000 + secrets.randbelow(800000))]  # a duration no other process has
    with within("exec returning at its timeout"), pytest.raises(Timeout) as info:
        await rt.exec(c.id, argv, timeout=1)
    raised(kit, info, Timeout)

    async def gone() -> bool:
        return not host.processes(argv)

    await eventually(f"{' '.join(argv)} ending after the exec timed out", gone)
    assert (await rt.inspect(c.id)).state is State.RUNNING
    assert (await rt.exec(c.id, ["true"], timeout=30)).exit_code == 0


async def test_exec_needs_a_running_container(kit: Kit):
    c = await kit.create(kit.spec("not-started", *TERMINABLE))
    with pytest.raises(Conflict) as info:
        await kit.runtime.exec(c.id, ["true"])
    raised(kit, info, Conflict)


# -- events ----------------------------------------------------------------------------------------------------
class _Events:
    """Reads a runtime's event stream one event of one container at a time."""

    def __init__(self, stream: AsyncIterator[Event]):
        self.stream, self.seen = stream, []

    async def until(self, id: str, action: EventAction) -> None:
        with within(f"a {action} event of {id}"):
            while True:
                event = await anext(self.stream)
                self.seen.append(event)
                if event.id == id and event.action == action:
                    return

    async def close(self) -> None:
        if hasattr(self.stream, "aclose"):
            await self.stream.aclose()


async def test_events_from_the_call_on_in_order(kit: Kit):
    rt = kit.runtime
    before = await kit.create(kit.spec("before", *TERMINABLE))
    events = _Events(rt.events())  # not iterated until after the create: the stream begins at this call
    try:
        c = await kit.create(kit.spec("watched", "sh", "-c", "exit 3"))
        await events.until(c.id, EventAction.CREATE)
        await rt.start(c.id)
        await events.until(c.id, EventAction.DIE)
        await rt.delete(c.id)
        await events.until(c.id, EventAction.DESTROY)
    finally:
        await events.close()
    assert all(isinstance(e, Event) and isinstance(e.action, EventAction) for e in events.seen), events.seen
    assert not [e for e in events.seen if e.id == before.id and e.action == EventAction.CREATE]
    mine = [e for e in events.seen if e.id == c.id]
    assert [e.action for e in mine] == [EventAction.CREATE, EventAction.START, EventAction.DIE, EventAction.DESTROY]
    assert {(e.runtime, e.name, e.namespace) for e in mine} == {(rt.name, "watched", kit.namespace)}
    assert mine[2].exit_code == 3


# -- listing and re-attaching ----------------------------------------------------------------------------------
async def test_list_filters_by_namespace_and_keeps_labels(kit: Kit):
    rt = kit.runtime
    other = kit.new_namespace()
    labels = {"kit.example/tier": "front", "kit.example/empty": ""}
    mine = await kit.create(kit.spec("same-name", *TERMINABLE, labels=labels))
    theirs = await kit.create(kit.spec("same-name", *TERMINABLE, namespace=other))
    listed = await rt.list(kit.namespace)
    assert [c.id for c in listed] == [mine.id]
    assert listed[0].labels == {L_NAMESPACE: kit.namespace, KIT_LABEL: "1", **labels}
    assert [(c.id, c.namespace) for c in await rt.list(other)] == [(theirs.id, other)]
    everything = await rt.list()
    assert {mine.id, theirs.id} <= {c.id for c in everything}
    assert all(L_NAMESPACE in c.labels for c in everything)


async def test_a_fresh_runtime_object_reattaches_to_running_containers(kit: Kit):
    c = await ready(kit, "survivor", *TERMINABLE)
    await kit.runtime.close()  # the client goes away; the container must not
    fresh = kit.reopen()
    live = {x.id: x for x in await fresh.reattach()}
    assert c.id in live and live[c.id].state is State.RUNNING
    again = await fresh.inspect(c.id)
    assert again.state is State.RUNNING and again.pid == c.pid
    await fresh.stop(c.id, timeout=30)
    assert (await fresh.inspect(c.id)).exit_code == 3
    await fresh.delete(c.id)
    assert await fresh.list(kit.namespace) == []
    kit.runtime = fresh  # the kit's clean-up goes through the runtime that is still open


# -- command and args ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("command", "args", "expected"), [
    (("echo", "from-command"), ("and", "args"), b"from-command and args\n"),
    (("echo", "command-only"), None, b"command-only\n"),
    (None, ("echo", "args-only"), b"args-only\n"),  # the kit's image has no entrypoint: args replace its cmd
], ids=["command+args", "command", "args"])
async def test_command_and_args(kit: Kit, command, args, expected):
    spec = kit.spec("argv", *(command or ()), args=args)
    c = await kit.create(spec)
    await kit.runtime.start(c.id)
    assert await wait(kit, c.id) == 0
    assert (await output(kit, c.id))["stdout"] == [expected]


# -- images ----------------------------------------------------------------------------------------------------
async def test_image_verbs(kit: Kit, tmp_path):
    kit.require("image_import")
    rt = kit.runtime
    ref = f"orchestr-conformance/own:{secrets.token_hex(4)}"
    archive = tmp_path / "own.tar"
    own = images.Layer().file("etc/conformance", secrets.token_hex(8)).bytes()  # an image id of its own
    image_id = images.write_docker_archive(archive, [images.busybox_layer().bytes(), own], [ref],
                                           labels={KIT_LABEL: "1"})
    kit.images.append(ref)

    imported = await rt.import_image(archive)
    assert [(i.id, ref in i.references) for i in imported] == [(image_id, True)]
    listed = {i.id: i for i in await rt.images()}
    assert image_id in listed and ref in listed[image_id].references and isinstance(listed[image_id], Image)
    details = await rt.image_inspect(ref)
    assert details["Id"] == image_id and ref in details["RepoTags"]
    history = await rt.image_history(ref)
    assert all(isinstance(h, HistoryEntry) for h in history)
    assert [h.created_by for h in history] == ["orchestr mkimage layer 1", "orchestr mkimage layer 0"]

    user = await kit.create(kit.spec("image-user", *TERMINABLE, image=ref))
    with pytest.raises(Conflict) as info:
        await rt.image_remove(ref)
    raised(kit, info, Conflict)
    assert ref in (await rt.image_inspect(ref))["RepoTags"]
    await rt.image_remove(ref, force=True)
    with pytest.raises(NotFound):
        await rt.image_inspect(ref)

    await rt.delete(user.id)
    await rt.image_prune()
    assert image_id not in {i.id for i in await rt.images()}
    assert (await rt.image_inspect(kit.image))["RepoTags"]  # prune keeps tagged images


# -- errors ----------------------------------------------------------------------------------------------------
def _unknown_calls(rt: Runtime, id: str) -> dict[str, Any]:
    calls = {
        "start": lambda: rt.start(id),
        "stop": lambda: rt.stop(id, timeout=1),
        "delete": lambda: rt.delete(id, force=True),
        "inspect": lambda: rt.inspect(id),
        "wait": lambda: rt.wait(id),
        "exec": lambda: rt.exec(id, ["true"]),
        "logs": lambda: _drain(rt.logs(id)),
        "image_inspect": lambda: rt.image_inspect(f"orchestr-conformance/absent:{id[:12]}"),
        "image_history": lambda: rt.image_history(f"orchestr-conformance/absent:{id[:12]}"),
        "image_remove": lambda: rt.image_remove(f"orchestr-conformance/absent:{id[:12]}"),
    }
    optional = {
        "pause": {"pause": lambda: rt.pause(id), "resume": lambda: rt.resume(id)},
        "signal": {"signal": lambda: rt.signal(id, "SIGHUP")},
        "stats": {"stats": lambda: rt.stats(id)},
        "update": {"update": lambda: rt.update(id, Resources(pids=10))},
    }
    for capability, verbs in optional.items():
        if getattr(rt.capabilities, capability):
            calls.update(verbs)
    return calls


async def _drain(lines: AsyncIterator[LogLine]) -> None:
    async for _ in lines:
        pass


async def test_an_unknown_id_is_not_found_on_every_verb(kit: Kit):
    unknown = secrets.token_hex(32)
    wrong = []
    for verb, call in _unknown_calls(kit.runtime, unknown).items():
        try:
            with within(f"{verb} of an unknown id returning"):
                await call()
        except NotFound as e:
            if e.runtime != kit.runtime.name:
                wrong.append(f"{verb}: NotFound names runtime {e.runtime!r}")
        except Exception as e:  # reported with the others below
            wrong.append(f"{verb}: {type(e).__name__}: {e}")
        else:
            wrong.append(f"{verb}: no error")
    assert not wrong, wrong


async def test_deleting_a_running_container_needs_force(kit: Kit):
    c = await kit.run("running", *TERMINABLE)
    with pytest.raises(Conflict) as info:
        await kit.runtime.delete(c.id)
    error = raised(kit, info, Conflict)
    assert not error.retryable
    assert (await kit.runtime.inspect(c.id)).state is State.RUNNING
    await kit.runtime.delete(c.id, force=True)
    assert await kit.runtime.list(kit.namespace) == []


# -- stats -----------------------------------------------------------------------------------------------------
async def test_stats_of_a_running_container(kit: Kit):
    kit.require("stats")
    limited = bool(kit.runtime.capabilities.limits)
    resources = Resources(memory=64 * MiB) if limited else Resources()
    c = await kit.run("measured", *TERMINABLE, resources=resources)
    stats = await kit.runtime.stats(c.id)
    assert isinstance(stats, Stats)
    assert stats.pids is None or stats.pids >= 1
    assert stats.memory is None or stats.memory > 0
    if limited and stats.memory_limit is not None:
        assert stats.memory_limit == 64 * MiB


def _bounded(test):
    """The test, failing instead of hanging when a verb never returns (a hung test would stall the whole run)."""
    @functools.wraps(test)
    async def bounded(*args, **kwargs):
        with within(f"{test.__name__} finishing", TEST_BOUND):
            await test(*args, **kwargs)
    return bounded


for _name, _test in list(globals().items()):
    if _name.startswith("test_"):
        globals()[_name] = _bounded(_test)

__all__ = ["pytestmark", *sorted(name for name in dict(globals()) if name.startswith("test_"))]
