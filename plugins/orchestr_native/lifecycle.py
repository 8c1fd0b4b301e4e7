"""A native container's life: create, start, stop, delete, pause, resume, signal, update, wait, and the end of
what a dead supervisor left running (reattach)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import signal as signals
import threading
import time
from typing import TYPE_CHECKING

import anyio

from orchestr.config import private_dir
from orchestr.containers import UNKNOWN_EXIT, rfc3339, volumes
from orchestr.errors import Conflict, RuntimeFailure, TerminalFailure
from orchestr.model import Container, ContainerSpec, Resources, State

from . import mapping, steps
from .process import linux
from .store import ContainerStore, supervised
from .supervisor import records

if TYPE_CHECKING:
    from pathlib import Path

    from .network import Network


def create(store: ContainerStore, spec: ContainerSpec) -> Container:
    if spec.network not in ("bridge", "host", "none"):
        raise RuntimeFailure(f"container {spec.name}: unknown network {spec.network!r}; use bridge, host or none")
    with store.lock():
        if (spec.namespace, spec.name) in store.names().values():
            raise Conflict(f"container name {spec.name!r} is already in use in namespace {spec.namespace!r}")
        image_id = store.images.resolve(spec.image)
        image = (store.images.image_config(image_id) or {}).get("config") or {}
        layers = [str(p) for p in store.images.layer_paths(image_id)]
        id = os.urandom(32).hex()
        d = store.dir / id
        # bind sources resolved: the container gets what was checked; a bad spec raises here, before any change
        config = mapping.config(
            dataclasses.replace(spec, volumes=volumes(spec)), image, id=id, image_id=image_id, layers=layers,
            directory=d, volumes_dir=store.volumes, resolv_conf=os.path.exists("/etc/resolv.conf"),
            created_at=rfc3339(), **store.settings,
        )
        for m in config["mounts"]:
            if m["type"] == "volume":
                private_dir(store.volumes)
                os.makedirs(m["source"], 0o755, exist_ok=True)  # as the container sees it; volumes/ keeps others out
        d.mkdir(mode=0o700)
        # The network goes on while the rest is made: its address is reserved first (hosts and resolv.conf
        # written, a taken port refused before any change), then the kernel's work (a namespace, a veth pair:
        # milliseconds), which the start need not wait for (_Attaching).
        attaching = _Attaching(store.network, id, spec, d) if spec.network == "bridge" else None
        try:
            for sub in ("upper", "work", "rootfs"):  # as the container's / shows them; d keeps others out
                (d / sub).mkdir(mode=0o755)
            (d / "hostname").write_text(f"{spec.name}\n")
            if attaching is None:
                (d / "hosts").write_text(f"127.0.0.1\tlocalhost {spec.name}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
            if spec.network == "host" and "/etc/resolv.conf" in config["files"]:
                shutil.copyfile("/etc/resolv.conf", config["files"]["/etc/resolv.conf"])
            try:
                store.cgroup(id).create(spec.resources)
            except OSError as e:
                raise RuntimeFailure(f"container {spec.name}: cannot set up its cgroup: {e}") from None
            if attaching is not None:
                config["net"] = attaching.net()
        except BaseException:
            if attaching is not None:  # a failed attach has undone what it did
                config["net"] = attaching.record if attaching.finish() is None else None
            store.cgroup(id).remove()
            if config["net"]:
                store.network.detach(config)
            shutil.rmtree(d)
            raise
        try:
            records.write_json(str(d / records.CONFIG), config)  # no state.json yet: load reads that as created
        except BaseException:
            if attaching is not None:
                attaching.finish()  # what it made is left as a crash here would leave it: the next create sweeps it
            raise
        if attaching is not None:
            store.attaching[id] = attaching  # finished by the start, the delete, or at this process's exit
    store.event(config, "create", State.CREATED)
    return store.view(config, {"status": "created"})


class _Attaching:
    """A new container's Network.attach, in a thread of its own from create on. Its record (net()) is there
    once the address is reserved; the namespace and veth are made after that, while the create ends and the
    start begins. The thread tells through a pipe when they are: gate, its read end, gives a byte once they
    are made, and only an end of file if the attach failed (and undid itself). The start hands gate to the
    container's init, which waits on it before joining the namespace."""

    def __init__(self, network: Network, id: str, spec: ContainerSpec, directory: Path):
        self.record: dict | None = None
        self.error: BaseException | None = None
        self._reserved = threading.Event()
        self.gate, self._ready = os.pipe2(os.O_CLOEXEC)
        self.thread = threading.Thread(target=self._run, args=(network, id, spec, directory), name="orchestr-network")
        self.thread.start()

    def _run(self, network: Network, id: str, spec: ContainerSpec, directory: Path) -> None:
        try:
            network.attach(id, spec, directory, self._reserve)
            os.write(self._ready, b"1")
        except BaseException as e:  # noqa: BLE001 - handed to the create, or to the start
            self.error = e
        finally:
            os.close(self._ready)
            self._reserved.set()

    def _reserve(self, net: dict) -> None:
        self.record = net
        self._reserved.set()

    def net(self) -> dict:
        """The network's record once its address is reserved; what the attach raised before that is raised."""
        self._reserved.wait()
        if self.record is None:
            assert self.error is not None
            raise self.error
        return self.record

    def finish(self) -> BaseException | None:
        """Waits for the attach's end and closes gate; returns what the attach raised, if anything."""
        self.thread.join()
        if self.gate is not None:
            os.close(self.gate)
            self.gate = None
        return self.error


def finish_attach(store: ContainerStore, id: str) -> BaseException | None:
    """Waits for the network this process's create of container id may still be making; returns what its attach
    raised, if anything."""
    attaching = store.attaching.pop(id, None)
    return attaching.finish() if attaching is not None else None


def start_steps(store: ContainerStore, id: str) -> steps.Steps[None]:
    config, state = store.load(id)
    if supervised(state):
        if not (store.dir / id / records.STOP).exists():
            return  # running, paused, or waiting to be restarted by the supervisor
        yield from _wait_unsupervised(store, id, 10.0)  # a stop is under way: let it finish
    elif state.get("supervised"):  # its supervisor died: end what the last run left before a new one
        yield functools.partial(end_orphan, store, id)
    yield functools.partial(start_run, store, config)


def start_run(store: ContainerStore, config: dict, stdin: int | None = None, attach: bool = False,
              winsize: list[int] | None = None) -> int | None:
    """Has the supervisor start the container; stdin, when given, becomes its standard input. With attach,
    a tty container's terminal, winsize (rows, columns) big, is returned (the caller relays it) instead of
    being logged."""
    d = store.dir / config["id"]
    cgroup = store.cgroup(config["id"])
    try:
        if not cgroup.exists():  # made at create; gone after a reboot
            cgroup.create(mapping.resources(config))
    except OSError as e:
        raise RuntimeFailure(f"container {config['name']}: cannot set up its cgroup: {e}") from None
    # A network its create is still making here is waited for by the init, on the gate, so the two go on at once
    attaching = store.attaching.pop(config["id"], None)
    if config.get("net") and attaching is None:
        store.network.ensure(config)  # a reboot or a hand may have taken the namespace or the bridge
    (d / records.STOP).unlink(missing_ok=True)

    def ask(gate: int | None) -> dict:
        request = {"op": "start", "dir": str(d), "stdin": stdin is not None, "attach": attach, "winsize": winsize,
                   "gate": gate is not None}
        fds = [fd for fd in (stdin, gate) if fd is not None]
        try:
            # answered once the start is settled: at worst when the supervisor gives it up, after start_timeout
            timeout = float(config.get("start_timeout") or 30.0) + 30.0
            return store.supervisor.request(request, timeout, fds=fds)
        except (OSError, EOFError) as e:
            raise RuntimeFailure(f"container {config['name']}: the supervisor failed: {e}") from None

    if attaching is None:
        reply = ask(None)
    else:
        try:
            reply = ask(attaching.gate)
        finally:
            failed = attaching.finish()
        if failed is not None:
            raise failed  # why the init found the gate closed
        if "error" in reply and not reply.get("gate"):
            # a supervisor from before the gate, still looking after containers an older orchestr started: its
            # init did not wait for the network, which is there now
            reply = ask(None)
    if "error" in reply:
        raise RuntimeFailure(f"container {config['name']}: {reply['error']}")
    if (stdin is not None or attach) and not reply.get("io"):
        # a supervisor from before -i and -t, still looking after containers an older orchestr started
        raise RuntimeFailure(f"container {config['name']}: this state dir's supervisor is older than orchestr "
                             "and cannot pass a standard input or a terminal; it exits once it supervises "
                             "nothing for a minute")
    return reply.get("fd")


def stop_steps(store: ContainerStore, id: str, signal: str, timeout: float) -> steps.Steps[None]:
    config, state = store.load(id)
    if not supervised(state):
        if state.get("supervised"):  # its supervisor died: what it left runs on unless ended here
            yield functools.partial(end_orphan, store, id)
        return
    sig = parse_signal(signal)
    d = store.dir / id
    (d / records.STOP).touch(0o600)
    if state.get("status") == "running":
        store.event(config, "stop")
        cgroup = store.cgroup(id)
        kill(state.get("init"), sig)
        if cgroup.frozen():
            cgroup.thaw()  # a frozen process cannot act on the signal
        if not (yield from _wait_unsupervised(store, id, timeout)):
            kill(state.get("init"), signals.SIGKILL)
            yield cgroup.kill_all
    else:  # exited, waiting for a restart
        yield functools.partial(store.supervisor.ask, {"op": "cancel-restart", "dir": str(d)})
    if not (yield from _wait_unsupervised(store, id, 30.0)):
        raise RuntimeFailure(f"container {config['name']}: the supervisor did not record its end after the stop")


def _wait_unsupervised(store: ContainerStore, id: str, timeout: float) -> steps.Steps[bool]:
    """Waits until the supervisor has recorded the container's end for good; False on timeout."""
    deadline = time.monotonic() + timeout
    for delay in steps.polls():
        if not supervised(store.load(id)[1]):
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        yield min(delay, left)
    return False  # never reached: the polls go on for ever


def delete_steps(store: ContainerStore, id: str, force: bool) -> steps.Steps[None]:
    config, state = store.load(id)
    current = store.view(config, state).state
    if current in (State.RUNNING, State.PAUSED) and not force:
        raise Conflict(f"container {config['name']} is {current}; stop it first or delete with force")
    yield from stop_steps(store, id, "SIGKILL", 5.0)
    yield functools.partial(_destroy, store, config)
    store.event(config, "destroy")


def _destroy(store: ContainerStore, config: dict) -> None:
    finish_attach(store, config["id"])
    d = store.dir / config["id"]
    _unmount_under(str(d))
    try:
        store.cgroup(config["id"]).remove()
    except (OSError, TimeoutError) as e:
        raise RuntimeFailure(f"container {config['name']}: cannot remove its cgroup: {e}") from None
    if config.get("net"):
        try:
            store.network.detach(config)
        except OSError as e:
            raise RuntimeFailure(f"container {config['name']}: cannot remove its network: {e}") from None
    shutil.rmtree(d, ignore_errors=True)


async def pause(store: ContainerStore, id: str) -> None:
    config, state = store.load(id)
    if store.view(config, state).state is not State.RUNNING:
        raise Conflict(f"container {config['name']} is not running")
    try:
        await anyio.to_thread.run_sync(store.cgroup(id).freeze)
    except (OSError, TimeoutError) as e:
        raise RuntimeFailure(f"container {config['name']}: cannot pause: {e}") from None
    store.event(config, "pause", State.PAUSED)


async def resume(store: ContainerStore, id: str) -> None:
    config, state = store.load(id)
    if store.view(config, state).state is not State.PAUSED:
        raise Conflict(f"container {config['name']} is not paused")
    await anyio.to_thread.run_sync(store.cgroup(id).thaw)
    store.event(config, "unpause", State.RUNNING)


def signal(store: ContainerStore, id: str, name: str) -> None:
    config, state = store.load(id)
    current = store.view(config, state).state
    if current is not State.RUNNING:
        raise Conflict(f"container {config['name']} is {current}; a signal needs a running container")
    kill(state.get("init"), parse_signal(name))


def update(store: ContainerStore, id: str, resources: Resources) -> None:
    with store.lock():
        config, _ = store.load(id)
        merged = mapping.updated(mapping.resources(config), resources)
        try:
            store.cgroup(id).create(merged)  # writes the limits into the existing cgroup
        except OSError as e:
            raise RuntimeFailure(f"container {config['name']}: cannot update its limits: {e}") from None
        config.pop("limits", None)  # an older orchestr's name for them
        config["resources"] = dataclasses.asdict(merged)  # for the cgroup made again at a start after a reboot
        records.write_json(str(store.dir / id / records.CONFIG), config)


def wait_steps(store: ContainerStore, id: str) -> steps.Steps[int]:
    first = store.view(*store.load(id))
    if first.state is State.EXITED:
        return first.exit_code if first.exit_code is not None else UNKNOWN_EXIT
    for delay in steps.polls():
        yield delay
        now = store.view(*store.load(id))
        # a restart can come and go between two looks: a new start time means the run we waited for ended
        ended = first.state is not State.CREATED and now.started_at != first.started_at
        if now.state is State.EXITED or ended:
            _, state = store.load(id)
            code = state.get("exit_code")
            return code if code is not None else UNKNOWN_EXIT
    return UNKNOWN_EXIT  # never reached: the polls go on for ever


# -- what a dead supervisor left ------------------------------------------------------

def reattach(store: ContainerStore) -> list[Container]:
    """The containers a live supervisor looks after; those whose supervisor died are ended, half-made ones
    removed, and networks nothing uses any more swept."""
    live = []
    with store.lock():
        for id in store.ids():
            d = store.dir / id
            config = records.read_json(str(d / records.CONFIG))
            if config is None:  # a create that died half-way: nothing else refers to it but its cgroup
                with contextlib.suppress(OSError, TimeoutError):
                    store.cgroup(id).remove()
                shutil.rmtree(d, ignore_errors=True)
                continue
            state = records.read_json(str(d / records.STATE)) or {"status": "created"}
            if supervised(state):
                live.append(store.view(config, state))
                continue
            if state.get("supervised"):
                _end_unsupervised(store, config, state)
        store.network.sweep()
    return live


def end_orphan(store: ContainerStore, id: str) -> None:
    """Ends one container whose supervisor is gone, unless another process has meanwhile."""
    with store.lock():
        config, state = store.load(id)
        if state.get("supervised") and not supervised(state):
            _end_unsupervised(store, config, state)


def _end_unsupervised(store: ContainerStore, config: dict, state: dict) -> None:
    """The supervisor is gone (crash, kill or reboot): whatever it left runs unsupervised; end it.
    Called with the lock held."""
    d = store.dir / config["id"]
    _unmount_under(str(d))
    cgroup = store.cgroup(config["id"])
    if cgroup.exists():
        cgroup.kill_all()
    (d / records.STOP).unlink(missing_ok=True)
    was_running = state.get("status") == "running"
    if was_running:
        state.update(status="exited", exit_code=UNKNOWN_EXIT, finished_at=rfc3339())
    state["supervised"] = False
    records.write_json(str(d / records.STATE), state)
    if was_running:
        store.event(config, "die", State.EXITED, UNKNOWN_EXIT)


def parse_signal(name: str) -> int:
    text = str(name).upper()
    if text.isdigit():
        return int(text)
    try:
        return int(signals.Signals[text if text.startswith("SIG") else f"SIG{text}"])
    except KeyError:
        raise TerminalFailure(f"unknown signal {name!r}; expected a name such as SIGTERM or a number") from None


def kill(ident: dict | None, sig: int) -> None:
    """Sends sig to the process records.identity() recorded, if it still runs."""
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
