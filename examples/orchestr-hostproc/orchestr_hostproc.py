"""An example orchestr runtime plugin: each container is a plain process on the host.

THERE IS NO ISOLATION. No image is unpacked, no namespace, cgroup or network is made: the
container's command runs on the host with the container's environment, working directory and
user (a host user: only root may run as another); image, restart policy, volumes, ports and network are
ignored, and resources cannot be enforced (its capabilities say so: orchestr refuses a spec that
sets them). This module exists to show, in one readable file, what a runtime plugin implements:
do not run anything with it that you would not run on the host by hand.

Every container is a directory under <state dir>/hostproc/<id>/ holding record.json (what
orchestr asked for, its ownership labels included, and the pid once started), stdout.log and
stderr.log (the two streams; the order between them is not kept) and exitcode (written by the
wrapper shell when the command ends).
State is derived from the record and from whether the pid is still alive, so the plugin keeps
no process of its own: containers outlive the CLI, and any later `orchestr` sees them.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import json
import os
import pwd
import shutil
import signal as signals
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import anyio

from orchestr.containers import UNKNOWN_EXIT, rfc3339
from orchestr.containers import argv as resolve_argv
from orchestr.errors import Conflict, NotFound, RuntimeFailure, TerminalFailure, Timeout
from orchestr.hookspecs import hookimpl
from orchestr.model import (
    EXEC_OUTPUT_LIMIT,
    L_NAMESPACE,
    Container,
    ContainerSpec,
    Event,
    EventAction,
    ExecResult,
    HistoryEntry,
    Image,
    LogLine,
    State,
)
from orchestr.runtime import Capabilities, ExecOutput, ProgressCallback

NAME = "hostproc"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
POLL = 0.1  # seconds between looks at a process; there is no supervisor to tell us
# Runs the command and records its exit status in the exitcode file, which orchestr opens and hands over
# as the wrapper's standard input (so a command running as another user needs no right to the state dir);
# the wrapper moves it to fd 3 and gives the command /dev/null instead. The no-op trap keeps the shell
# alive through the signals sent to the whole process group, so it can still write the status after the
# command dies; a caught (not ignored) signal is reset to default in the command, which therefore still
# gets it. The command runs in a subshell, which forks: the shell's own vfork would leave it unstoppable
# (a pause right after start would wait for ever) until the command has started.
WRAPPER = 'trap : HUP INT QUIT USR1 USR2 ALRM TERM; exec 3>&0 </dev/null; ("$@" 3>&-); echo $? >&3'


@hookimpl
def orchestr_runtimes():
    return {NAME: lambda config: HostProcRuntime(config.state_dir / NAME)}


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may have ended since we looked
        os.killpg(pid, sig)


def _signum(name: str | int) -> int:
    """A signal number from SIGTERM, TERM or 15."""
    text = str(name).upper()
    try:
        return int(text) if text.isdigit() else signals.Signals[text if text.startswith("SIG") else f"SIG{text}"]
    except KeyError:
        raise TerminalFailure(f"unknown signal {name!r}; expected a name such as SIGTERM or a number",
                              runtime=NAME) from None


def _actions(before: State | None, now: State) -> list[EventAction]:
    """The event actions that lead from one look at a container to the next, in order."""
    if before == now:
        return []
    if {before, now} == {State.RUNNING, State.PAUSED}:
        return [EventAction.PAUSE if now is State.PAUSED else EventAction.UNPAUSE]
    steps = [] if before else [EventAction.CREATE]
    if now is not State.CREATED and before not in (State.RUNNING, State.PAUSED):
        steps.append(EventAction.START)
    return steps + {State.PAUSED: [EventAction.PAUSE], State.EXITED: [EventAction.DIE]}.get(now, [])


def _credentials(user: str | None, where: str) -> dict:
    """Popen's user, group and extra_groups for user ("name", "uid", "name:group", "uid:gid"), looked up on the
    host; nothing when it is this process's own. Only root can become someone else: anyone else is refused
    rather than quietly run as themselves."""
    if not user:
        return {}
    name, _, group = user.partition(":")
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        uid, gid = entry.pw_uid, entry.pw_gid
    except KeyError:
        if not name.isdigit():
            raise TerminalFailure(f"{where}: no user {name!r} on this host", runtime=NAME) from None
        uid, gid = int(name), 0
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise TerminalFailure(f"{where}: no group {group!r} on this host", runtime=NAME) from None
    if (uid, gid) == (os.geteuid(), os.getegid()):
        return {}
    if os.geteuid() != 0:
        raise TerminalFailure(f"{where}: running as {user} needs orchestr to run as root", runtime=NAME)
    return {"user": uid, "group": gid, "extra_groups": []}


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks) of a process, or None when there is no such pid."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return fields[0], fields[19]


class HostProcRuntime:
    """orchestr.runtime.Runtime over host processes; see the module docstring for what it lacks."""

    name = NAME
    # Beyond the verbs every runtime has: pause (SIGSTOP) and signal. No restarts, limits, stats, image
    # archives or runs without an event loop; events come from comparing snapshots.
    capabilities = Capabilities(pause=True, signal=True)

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    # -- records ---------------------------------------------------------------------------------
    def _dir(self, id: str) -> Path:
        return self.root / id

    def _load(self, id: str) -> dict:
        try:
            return json.loads((self._dir(id) / "record.json").read_text())
        except (OSError, ValueError):
            raise NotFound(f"hostproc container {id!r} does not exist", runtime=NAME, container=id) from None

    def _save(self, rec: dict) -> None:
        path = self._dir(rec["id"]) / "record.json"
        path.with_suffix(".tmp").write_text(json.dumps(rec, indent=2))
        path.with_suffix(".tmp").replace(path)  # atomic: a reader never sees half a record

    def _records(self) -> list[dict]:
        found = []
        for entry in self.root.iterdir():
            try:
                found.append(self._load(entry.name))
            except NotFound:
                pass
        return found

    def _alive(self, rec: dict) -> str | None:
        """The process's state letter while it runs, or None; the start time guards against pid reuse."""
        stat = rec.get("pid") and _proc_stat(rec["pid"])
        alive = stat and stat[0] not in "ZX" and stat[1] == rec["pid_start"]
        return stat[0] if alive else None

    def _exit_code(self, rec: dict) -> int:
        try:
            return int((self._dir(rec["id"]) / "exitcode").read_text())
        except (OSError, ValueError):  # set when we SIGKILLed the wrapper; else killed from outside: lost
            return UNKNOWN_EXIT if rec.get("exit_code") is None else rec["exit_code"]

    def _container(self, rec: dict) -> Container:
        alive = self._alive(rec)
        if alive:
            state = State.PAUSED if alive == "T" else State.RUNNING
        else:
            state = State.EXITED if rec.get("pid") else State.CREATED
        exited = state is State.EXITED
        return Container(
            id=rec["id"], name=rec["name"], namespace=rec["namespace"], runtime=NAME, image=rec["image"],
            state=state, labels=rec["labels"], exit_code=self._exit_code(rec) if exited else None,
            pid=rec["pid"] if alive else None, created_at=rec["created_at"], started_at=rec.get("started_at"),
            finished_at=rec.get("finished_at") if exited else None,
        )

    def _running(self, id: str) -> dict:
        rec = self._load(id)
        if not self._alive(rec):
            raise Conflict(f"hostproc container {rec['name']!r} is not running", runtime=NAME, container=id)
        return rec

    # -- containers ------------------------------------------------------------------------------
    async def create(self, spec: ContainerSpec) -> Container:
        command = resolve_argv(spec)  # as every runtime puts command and args together; no image to ask
        if any(r["namespace"] == spec.namespace and r["name"] == spec.name for r in self._records()):
            raise Conflict(f"hostproc container {spec.namespace}/{spec.name} already exists", runtime=NAME,
                           container=spec.name)
        id = uuid.uuid4().hex
        self._dir(id).mkdir()
        rec = {
            "id": id, "name": spec.name, "namespace": spec.namespace, "image": spec.image,
            "labels": dict(spec.labels), "argv": command, "env": {"PATH": PATH, **spec.env},
            "workdir": spec.working_dir or str(self._dir(id)), "user": spec.user, "created_at": rfc3339(),
        }
        self._save(rec)
        return self._container(rec)

    async def start(self, id: str) -> None:
        rec = self._load(id)
        if self._alive(rec):
            return
        d = self._dir(id)
        try:
            with open(d / "stdout.log", "ab") as out, open(d / "stderr.log", "ab") as err, \
                    open(d / "exitcode", "wb") as exit_file:
                proc = subprocess.Popen(
                    ["/bin/sh", "-c", WRAPPER, "sh", *rec["argv"]],
                    cwd=rec["workdir"], env=rec["env"], stdin=exit_file, stdout=out, stderr=err,
                    start_new_session=True,  # its own process group, and it survives the CLI exiting
                    **_credentials(rec.get("user"), f"hostproc container {rec['name']!r}"),
                )
        except OSError as exc:
            where = f"hostproc container {rec['name']!r}: cannot start in {rec['workdir']}"
            raise RuntimeFailure(f"{where}: {exc.strerror}", runtime=NAME, container=id) from None
        rec.update(pid=proc.pid, pid_start=_proc_stat(proc.pid)[1], started_at=rfc3339(), exit_code=None,
                   finished_at=None)
        # Reap it when it ends, so that a long-lived caller keeps no zombie (a CLI exits long before).
        threading.Thread(target=proc.wait, daemon=True).start()
        self._save(rec)

    async def stop(self, id: str, *, signal: str = "SIGTERM", timeout: float = 10.0) -> None:
        rec = self._load(id)
        if not self._alive(rec):
            return
        _signal_group(rec["pid"], _signum(signal))
        _signal_group(rec["pid"], signals.SIGCONT)  # a paused process would not act on the signal
        with anyio.move_on_after(timeout):
            while self._alive(rec):
                await anyio.sleep(POLL)
        if self._alive(rec):
            _signal_group(rec["pid"], signals.SIGKILL)
            while self._alive(rec):
                await anyio.sleep(POLL)
            if not (self._dir(id) / "exitcode").read_bytes().strip():  # the wrapper died before writing it
                rec["exit_code"] = 128 + signals.SIGKILL
        rec["finished_at"] = rfc3339()
        self._save(rec)

    async def delete(self, id: str, *, force: bool = False) -> None:
        rec = self._load(id)
        if self._alive(rec):
            if not force:
                raise Conflict(f"hostproc container {rec['name']!r} is running (stop it first, or force)",
                               runtime=NAME, container=id)
            await self.stop(id, signal="SIGKILL", timeout=0)
        shutil.rmtree(self._dir(id))

    async def pause(self, id: str) -> None:
        rec = self._running(id)
        _signal_group(rec["pid"], signals.SIGSTOP)
        while self._alive(rec) not in ("T", None):  # a signal takes effect when the process next runs
            await anyio.sleep(POLL / 10)

    async def resume(self, id: str) -> None:
        rec = self._running(id)
        _signal_group(rec["pid"], signals.SIGCONT)
        while self._alive(rec) == "T":
            await anyio.sleep(POLL / 10)

    async def signal(self, id: str, signal: str) -> None:
        # to the whole group: the wrapper shell ignores it, the command gets it
        _signal_group(self._running(id)["pid"], _signum(signal))

    async def inspect(self, id: str) -> Container:
        return self._container(self._load(id))

    async def list(self, namespace: str | None = None) -> list[Container]:
        return self._snapshot(namespace)

    def _snapshot(self, namespace: str | None = None) -> list[Container]:
        return [
            self._container(rec) for rec in self._records()
            if L_NAMESPACE in rec["labels"] and namespace in (None, rec["namespace"])
        ]

    async def logs(self, id: str, *, follow: bool = False, tail: int | None = None) -> AsyncIterator[LogLine]:
        # No supervisor stamps the lines: each stream is a file of its own, its lines in order, stdout's first;
        # tail keeps the last lines of each.
        rec = self._load(id)
        with open(self._dir(id) / "stdout.log", "a+b") as out, open(self._dir(id) / "stderr.log", "a+b") as err:
            files = {"stdout": out, "stderr": err}
            for stream, f in files.items():
                f.seek(0)
                lines = f.readlines()
                for line in lines if tail is None else lines[max(0, len(lines) - tail):]:
                    yield LogLine(stream, line)
            pending = dict.fromkeys(files, b"")
            while follow:
                quiet = True
                for stream, f in files.items():
                    chunk = f.read()
                    quiet = quiet and not chunk
                    *done, pending[stream] = (pending[stream] + chunk).split(b"\n")
                    for line in done:
                        yield LogLine(stream, line + b"\n")
                if quiet and not self._alive(rec):
                    break
                await anyio.sleep(POLL)
            for stream, rest in pending.items():
                if rest:
                    yield LogLine(stream, rest)

    async def exec(
        self, id: str, argv: Sequence[str], *, env: dict[str, str] | None = None, user: str | None = None,
        workdir: str | None = None, timeout: float | None = None, output: Callable[[LogLine], None] | None = None,
        output_limit: int = EXEC_OUTPUT_LIMIT,
    ) -> ExecResult:
        rec = self._running(id)
        collected = ExecOutput(output, output_limit)  # handed on as it comes, or kept up to output_limit
        try:
            # a session of its own, so that at the deadline what the command started is killed with it
            proc = await anyio.open_process(
                list(argv), cwd=workdir or rec["workdir"], env={**rec["env"], **(env or {})},
                stdin=subprocess.DEVNULL, start_new_session=True,
                **_credentials(user or rec.get("user"), f"hostproc container {rec['name']!r}"),
            )
        except OSError as exc:
            where = f"hostproc container {rec['name']!r}: cannot run {argv[0]!r}"
            raise RuntimeFailure(f"{where}: {exc.strerror}", runtime=NAME, container=id) from None

        async def drain(name: str, stream) -> None:
            async for chunk in stream:
                collected.add(name, chunk)

        async with proc:
            with anyio.move_on_after(timeout) as deadline:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(drain, "stdout", proc.stdout)
                    tg.start_soon(drain, "stderr", proc.stderr)
                    await proc.wait()
            if deadline.cancelled_caught:
                _signal_group(proc.pid, signals.SIGKILL)
                raise Timeout(f"hostproc container {rec['name']!r}: {argv[0]} ran past its {timeout:g}s deadline "
                              "and was killed", runtime=NAME, container=id)
        return collected.result(proc.returncode)

    async def wait(self, id: str) -> int:
        """The exit code; UNKNOWN_EXIT when the process ended without leaving one (killed from outside)."""
        rec = self._load(id)
        while self._alive(rec):
            await anyio.sleep(POLL)
        return self._exit_code(self._load(id))

    def events(self) -> AsyncIterator[Event]:
        # No engine pushes events here: compare snapshots of the records. The first is taken now, not at the
        # first iteration, so that the stream holds every change after this call.
        return self._events({c.id: c for c in self._snapshot()})

    async def _events(self, seen: dict[str, Container]) -> AsyncIterator[Event]:
        while True:
            await anyio.sleep(POLL * 5)
            now = {c.id: c for c in self._snapshot()}
            for id, c in now.items():
                before = seen.get(id)
                for action in _actions(before.state if before else None, c.state):
                    yield Event(NAME, id, c.name, c.namespace, action, c.state, c.exit_code, rfc3339())
            for id in seen.keys() - now.keys():
                yield Event(NAME, id, seen[id].name, seen[id].namespace, EventAction.DESTROY, None, None, rfc3339())
            seen = now

    async def reattach(self) -> list[Container]:
        # A directory without a readable record is a create that died halfway: remove it.
        for entry in self.root.iterdir():
            if entry.is_dir() and not (entry / "record.json").is_file():
                shutil.rmtree(entry, ignore_errors=True)
        return [c for c in await self.list() if c.state in (State.RUNNING, State.PAUSED)]

    async def close(self) -> None:
        pass  # no connection to close; the processes keep running

    # -- images: there are none; any reference is accepted and remembered ----------------------------
    def _refs_file(self) -> Path:
        return self.root / "images.json"

    def _refs(self) -> list[str]:
        try:
            return json.loads(self._refs_file().read_text())
        except (OSError, ValueError):
            return []

    def _image(self, ref: str) -> Image:
        return Image("sha256:" + hashlib.sha256(ref.encode()).hexdigest(), (ref,), 0, runtime=NAME)

    def _known(self, ref: str) -> Image:
        if ref not in self._refs():
            raise NotFound(f"hostproc has never seen image {ref!r}", runtime=NAME)
        return self._image(ref)

    async def ensure_image(self, ref: str, progress: ProgressCallback | None = None) -> Image:
        refs = self._refs()
        if ref not in refs:
            self._refs_file().write_text(json.dumps(sorted([*refs, ref])))
        return self._image(ref)

    async def pull(self, ref: str, progress: ProgressCallback | None = None) -> Image:
        return await self.ensure_image(ref)

    async def import_image(self, path: Path, progress: ProgressCallback | None = None) -> list[Image]:
        raise TerminalFailure("hostproc has no images: it runs commands on the host", runtime=NAME)

    async def images(self) -> list[Image]:
        return [self._image(ref) for ref in self._refs()]

    async def image_inspect(self, ref: str) -> dict:
        image = self._known(ref)
        return {"Id": image.id, "RepoTags": [ref], "Size": 0, "Config": {}, "RootFS": {"Type": "layers", "Layers": []}}

    async def image_history(self, ref: str) -> list[HistoryEntry]:
        self._known(ref)
        return []

    async def image_remove(self, ref: str, *, force: bool = False) -> None:
        self._known(ref)
        if not force and any(r["image"] == ref for r in self._records()):
            raise Conflict(f"image {ref!r} is used by a hostproc container", runtime=NAME)
        self._refs_file().write_text(json.dumps([r for r in self._refs() if r != ref]))

    async def image_prune(self) -> list[str]:
        used, refs = {r["image"] for r in self._records()}, self._refs()
        self._refs_file().write_text(json.dumps([ref for ref in refs if ref in used]))
        return [ref for ref in refs if ref not in used]
