"""The CRI runtime: orchestr's verbs carried out by any CRI v1 runtime (containerd's CRI plugin, CRI-O), as the
kubelet drives one, over gRPC at ORCHESTR_CRI_ENDPOINT.

Each replica is a pod sandbox holding one container; orchestr's id for it is the sandbox's. Nobody restarts a
CRI container on its own (in Kubernetes the kubelet does, and a CRI container never starts twice): orchestr's
reconcile starts an exited replica again by putting a new container (attempt + 1) in its pod, so the id, the
address and the published ports stay. Like the kubelet, orchestr reads the logs from the files the runtime
writes and looks at the containers' processes through this host's /proc, so the runtime must run on this host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal as signals
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path

import anyio
import grpc

from orchestr.config import Config
from orchestr.containers import argv as resolve_argv
from orchestr.containers import volumes
from orchestr.errors import Conflict, NotFound, RuntimeFailure, TerminalFailure, Timeout, located
from orchestr.model import EXEC_OUTPUT_LIMIT, L_NAMESPACE, L_SERVICE, Container, ContainerSpec, Event, ExecResult
from orchestr.model import LogLine, State, Stats
from orchestr.runtime import Capabilities, EventDelivery, ExecOutput

from . import cgroups, events, logs, mapping, network, pods
from .client import MAX_MESSAGE, RUNTIME, Connection, code, endpoint
from .images import Images, image_config
from .mapping import Made
from .proto import cri_pb2 as pb

CALL = 60.0  # seconds: the deadline of a call that does not wait on a container
SANDBOX_CALL = 240.0  # RunPodSandbox may pull the sandbox image
POLL = 0.1  # seconds between looks at a container that is awaited
EVENTS_POLL = 0.25  # seconds between snapshots, for runtimes without GetContainerEvents
CRIO_TIMED_OUT = b"command timed out"  # conmon's stderr for an exec it killed at its deadline
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")


def _signum(name: str | int) -> int:
    text = str(name).upper()
    try:
        return int(text) if text.isdigit() else signals.Signals[text if text.startswith("SIG") else f"SIG{text}"]
    except KeyError:
        raise TerminalFailure(f"unknown signal {name!r}; expected a name such as SIGTERM or a number",
                              runtime=RUNTIME) from None


def _info_pid(info: dict[str, str]) -> int | None:
    """The process id a verbose status tells (containerd's and CRI-O's info both carry one)."""
    try:
        pid = int(json.loads(info.get("info") or "{}").get("pid") or 0)
    except (ValueError, TypeError, AttributeError):
        return None
    return pid or None


class CriRuntime(Images):
    """orchestr's runtime on a CRI runtime at ORCHESTR_CRI_ENDPOINT (or crictl's configured one, or
    containerd's default socket)."""

    name = RUNTIME

    def __init__(self, config: Config, address: str | None = None) -> None:
        self.config = config
        self.conn = Connection(address or endpoint())
        # Limits (pids through the pod's cgroup on v1), signals and stats through this host, images archives
        # only on containerd (through ctr). CRI has no pause, no restarts of its own, no exec options and no
        # terminal here; events are polled unless the runtime streams them (which is then quicker than this).
        self.capabilities = Capabilities(
            limits=True, signal=True, stats=True, image_import=shutil.which("ctr") is not None,
            events=EventDelivery.POLLED, exec_options=False, exec_tty=True,
        )
        self._hosts_lock: anyio.Lock | None = None
        self._ips: dict[str, str] = {}  # pod id -> its address, which stays while its sandbox lives
        self._cgroupfs: bool | None = None
        self._recursive_ro: bool | None = None

    # -- what the runtime is ------------------------------------------------------------------------

    async def _uses_cgroupfs(self) -> bool:
        """Whether the runtime takes cgroup parents as paths (RuntimeConfig says; runtimes without that call,
        such as containerd 1.6, use their default, cgroupfs)."""
        if self._cgroupfs is None:
            try:
                answer = await self.conn.runtime.RuntimeConfig(pb.RuntimeConfigRequest(), timeout=CALL)
                self._cgroupfs = answer.linux.cgroup_driver == pb.CGROUPFS
            except grpc.RpcError as e:
                if code(e) != grpc.StatusCode.UNIMPLEMENTED:
                    raise self.conn.translate(e, "the CRI runtime's config") from None
                self._cgroupfs = True
        return self._cgroupfs

    async def _recursive_read_only(self) -> bool:
        """Whether the default runtime handler makes read-only binds read-only all the way down."""
        if self._recursive_ro is None:
            with self.conn.errors("the CRI runtime's status"):
                status = await self.conn.runtime.Status(pb.StatusRequest(), timeout=CALL)
            self._recursive_ro = any(h.features.recursive_read_only_mounts for h in status.runtime_handlers
                                     if h.name in ("", "runc"))
        return self._recursive_ro

    # -- looking things up --------------------------------------------------------------------------

    async def _pod(self, id: str, verbose: bool = False) -> pb.PodSandboxStatusResponse:
        with self.conn.errors(f"container {id}", container=id, missing=f"container {id} not found"):
            answer = await self.conn.runtime.PodSandboxStatus(
                pb.PodSandboxStatusRequest(pod_sandbox_id=id, verbose=verbose), timeout=CALL)
        if L_NAMESPACE not in answer.status.labels:
            raise NotFound(f"container {id} not found (the runtime has such a pod, but orchestr does not own it)",
                           runtime=RUNTIME, container=id)
        return answer

    async def _containers(self, pod_id: str) -> list[pb.Container]:
        with self.conn.errors(f"container {pod_id}", container=pod_id):
            listed = await self.conn.runtime.ListContainers(
                pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=pod_id)), timeout=CALL)
        return list(listed.containers)

    async def _status(self, cid: str, verbose: bool = False, pod: str | None = None) -> pb.ContainerStatusResponse:
        with self.conn.errors(f"container {pod or cid}", container=pod or cid):
            return await self.conn.runtime.ContainerStatus(
                pb.ContainerStatusRequest(container_id=cid, verbose=verbose), timeout=CALL)

    async def _current(self, id: str) -> tuple[pb.PodSandboxStatusResponse, Made, pb.Container | None]:
        """The pod, what it was made from, and its current container (None before it has one)."""
        pod = await self._pod(id)
        made = Made.of(pod.status.annotations)
        if made is None:
            raise TerminalFailure(f"container {id}: its pod carries orchestr's labels but not the config orchestr "
                                  "makes pods from; delete it and apply again", runtime=RUNTIME, container=id)
        return pod, made, mapping.latest(await self._containers(id))

    async def _running(self, id: str) -> tuple[Made, pb.ContainerStatusResponse]:
        """The running container of pod id, its status verbose (with its pid); Conflict when not running."""
        pod, made, current = await self._current(id)
        status = await self._status(current.id, verbose=True, pod=id) if current is not None else None
        if status is None or status.status.state != pb.CONTAINER_RUNNING or pod.status.state != pb.SANDBOX_READY:
            raise Conflict(f"container {pod.status.metadata.name} is not running", runtime=RUNTIME, container=id)
        return made, status

    # -- containers ---------------------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> Container:
        with located(self.name, spec.name):
            for what, value in (("name", spec.name), ("namespace", spec.namespace)):
                if not _NAME.fullmatch(value):  # it names the pod's directory on this host
                    raise TerminalFailure(f"container {value!r}: a {what} is letters, digits, '.', '_' and '-', "
                                          "starting with a letter or digit")
            spec = replace(spec, volumes=volumes(spec))
            mapping.user(spec)  # a group name is refused before anything is made
            info = dict((await self._image_status(spec.image, verbose=True)).info)
            config = image_config(info)
            argv = resolve_argv(spec, config.get("Entrypoint"), config.get("Cmd")) if mapping.image_spec(info) \
                else None
            pids = spec.resources.pids
            unified = cgroups.unified()
            cgroupfs = await self._uses_cgroupfs()
            if pids is not None and not unified and not cgroupfs:
                raise TerminalFailure(f"container {spec.name}: a pids limit needs cgroup v2, or a runtime that uses "
                                      "the cgroupfs driver: CRI has no pids limit of its own on cgroup v1")
            everyone = await self._pods()
            if any(p.metadata.name == spec.name and p.labels.get(L_NAMESPACE) == spec.namespace for p in everyone):
                raise Conflict(f"container {spec.namespace}/{spec.name} already exists")
            taken = [port for p in everyone if (m := Made.of(p.annotations)) for port in mapping.ports_of(m.pod)]
            ports = network.pick_ports(spec.name, spec.ports, taken) if spec.network == "bridge" else ()
            uid = mapping.pod_uid(spec.namespace, spec.name)
            where = pods.make(pods.pod_dir(self.config.state_dir, spec.namespace, spec.name, uid))
            try:
                if spec.network == "bridge":
                    network.write_hosts(where / pods.HOSTS, network.hosts([]))
                mounts, tmpfs = pods.mounts(spec, where, self.config.state_dir,
                                            recursive_read_only=await self._recursive_read_only())
                made = Made(
                    mapping.pod_config(spec, uid=uid, log_dir=str(where), ports=ports, dns=network.dns_config(),
                                       cgroup_parent=cgroups.parent(uid) if cgroupfs else ""),
                    mapping.container_config(spec, argv, mounts, unified_pids=unified),
                    spec.image, pids, tmpfs)
                pod_id = await self._run_pod(made, 0, spec.network)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    pods.remove(where)
                    cgroups.remove(uid)
                raise
        await self._refresh_hosts(spec.namespace)
        return await self.inspect(pod_id)

    async def _run_pod(self, made: Made, attempt: int, net: str) -> str:
        """Runs made's sandbox (attempt: how many it had before) with its first container created in it."""
        sandbox = made.sandbox_config(attempt)
        # what the host holds for the pod: made at create, and again when a reboot took it
        await asyncio.to_thread(pods.mount_tmpfs, Path(made.pod.log_directory), made.tmpfs)
        if made.pids is not None and not cgroups.unified():
            cgroups.prepare(made.pod.metadata.uid, made.pids)
        with self.conn.errors(f"container {made.pod.metadata.name}: its pod sandbox"):
            pod_id = (await self.conn.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=sandbox),
                                                            timeout=SANDBOX_CALL)).pod_sandbox_id
        try:
            if net == "none":
                path = network.netns(dict((await self._pod(pod_id, verbose=True)).info))
                if path is None:
                    raise TerminalFailure("network none: the runtime does not tell the pod's network namespace, in "
                                          "which orchestr sets the interfaces down")
                await asyncio.to_thread(network.isolate, path)
            with self.conn.errors(f"container {made.pod.metadata.name}"):
                await self.conn.runtime.CreateContainer(pb.CreateContainerRequest(
                    pod_sandbox_id=pod_id, config=made.container_config(0), sandbox_config=sandbox), timeout=CALL)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._remove_pod(pod_id)
            raise
        return pod_id

    async def _remove_pod(self, pod_id: str) -> None:
        """Stops and removes a sandbox, its containers with it; a sandbox already gone counts as removed."""
        self._ips.pop(pod_id, None)
        with self.conn.errors(f"container {pod_id}", container=pod_id):
            for call, request in ((self.conn.runtime.StopPodSandbox, pb.StopPodSandboxRequest(pod_sandbox_id=pod_id)),
                                  (self.conn.runtime.RemovePodSandbox,
                                   pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))):
                try:
                    await call(request, timeout=SANDBOX_CALL)
                except grpc.RpcError as e:
                    if code(e) != grpc.StatusCode.NOT_FOUND:
                        raise

    async def start(self, id: str) -> None:
        pod, made, current = await self._current(id)
        attempt = pod.status.metadata.attempt
        if pod.status.state != pb.SANDBOX_READY:
            # The runtime lost the sandbox (a reboot): a new one is made from the same config, under a new id.
            await self._remove_pod(id)
            attempt += 1
            id = await self._run_pod(made, attempt, _network(made))
            await self._refresh_hosts(pod.status.labels[L_NAMESPACE])
            current = mapping.latest(await self._containers(id))
        where = f"container {pod.status.metadata.name}"
        if current is not None and current.state == pb.CONTAINER_RUNNING:
            return
        with self.conn.errors(where, container=id):
            if current is None or current.state != pb.CONTAINER_CREATED:
                restarts = current.metadata.attempt + 1 if current is not None else 0
                if current is not None:
                    await self.conn.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=current.id),
                                                            timeout=CALL)
                config = made.container_config(restarts)
                created = await self.conn.runtime.CreateContainer(pb.CreateContainerRequest(
                    pod_sandbox_id=id, config=config, sandbox_config=made.sandbox_config(attempt)), timeout=CALL)
                cid = created.container_id
                logs.prune(Path(made.pod.log_directory) / config.log_path, logs.limits()[1])
            else:
                cid = current.id
            await self.conn.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=CALL)
        if made.pids is not None and not cgroups.unified():
            pid = _info_pid(dict((await self._status(cid, verbose=True, pod=id)).info))
            if pid is not None:
                with contextlib.suppress(OSError):  # ended already: nothing to limit
                    cgroups.limit_container(pid, made.pids)

    async def stop(self, id: str, *, signal: str = "SIGTERM", timeout: float = 10.0) -> None:
        pod, made, current = await self._current(id)
        if current is None or current.state != pb.CONTAINER_RUNNING:
            return
        where = f"container {pod.status.metadata.name}"
        signum = _signum(signal)
        if signum != signals.SIGTERM:
            # StopContainer sends the image's stop signal (SIGTERM unless it names another): any other signal
            # is sent to the container's process on this host, and StopContainer kills it after the grace
            pid = _info_pid(dict((await self._status(current.id, verbose=True, pod=id)).info))
            if pid is not None and self._kill(pid, current.id, signum):
                with anyio.move_on_after(timeout):
                    while await self._state(current.id, id) == pb.CONTAINER_RUNNING:
                        await anyio.sleep(POLL)
            timeout = 0
        with self.conn.errors(where, container=id):
            await self.conn.runtime.StopContainer(
                pb.StopContainerRequest(container_id=current.id, timeout=mapping.stop_timeout(timeout)),
                timeout=timeout + CALL)

    async def _state(self, cid: str, pod_id: str) -> int:
        return (await self._status(cid, pod=pod_id)).status.state

    @staticmethod
    def _kill(pid: int, container_id: str, signum: int) -> bool:
        """Sends signum to the container's process pid, through a pidfd so that a pid reused since cannot be hit;
        False when the process has gone or is not the container's."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        try:
            if container_id not in Path(f"/proc/{pid}/cgroup").read_text():
                return False
            signals.pidfd_send_signal(fd, signum)
        except (ProcessLookupError, FileNotFoundError):
            return False
        finally:
            os.close(fd)
        return True

    async def signal(self, id: str, signal: str) -> None:
        signum = _signum(signal)
        _, status = await self._running(id)
        pid = _info_pid(dict(status.info))
        if pid is None or not self._kill(pid, status.status.id, signum):
            raise Conflict(f"container {id} is not running", runtime=RUNTIME, container=id)

    async def delete(self, id: str, *, force: bool = False) -> None:
        pod = await self._pod(id)  # what it was made from is not needed: a pod without it goes too
        current = mapping.latest(await self._containers(id))
        if current is not None and current.state == pb.CONTAINER_RUNNING and not force:
            raise Conflict(f"container {pod.status.metadata.name} is running (stop it first, or force)",
                           runtime=RUNTIME, container=id)
        await self._remove_pod(id)
        if (made := Made.of(pod.status.annotations)) is not None:
            await asyncio.to_thread(self._forget, made)
        await self._refresh_hosts(pod.status.labels[L_NAMESPACE])

    @staticmethod
    def _forget(made: Made) -> None:
        """Removes what orchestr made on this host for a pod: its directory (logs, hosts, tmpfs) and cgroup."""
        where = Path(made.pod.log_directory)
        if pods.owned(where) and where.name.endswith(f"_{made.pod.metadata.uid}"):  # orchestr named it for this pod
            pods.remove(where)
        cgroups.remove(made.pod.metadata.uid)

    async def inspect(self, id: str) -> Container:
        pod, made, current = await self._current(id)
        status, pid = None, None
        if current is not None:
            answer = await self._status(current.id, verbose=current.state == pb.CONTAINER_RUNNING, pod=id)
            status, pid = answer.status, _info_pid(dict(answer.info))
        return mapping.container(pod.status, made, status, pid=pid, ip=pod.status.network.ip)

    async def _ip(self, pod_id: str) -> str:
        """A ready pod's address, asked of the runtime once."""
        if pod_id not in self._ips:
            self._ips[pod_id] = (await self._pod(pod_id)).status.network.ip
        return self._ips[pod_id]

    async def _pods(self, namespace: str | None = None) -> list[pb.PodSandbox]:
        selector = {L_NAMESPACE: namespace} if namespace is not None else {}
        with self.conn.errors("pod sandboxes"):
            listed = await self.conn.runtime.ListPodSandbox(
                pb.ListPodSandboxRequest(filter=pb.PodSandboxFilter(label_selector=selector)), timeout=CALL)
        return [p for p in listed.items if L_NAMESPACE in p.labels]

    async def list(self, namespace: str | None = None) -> list[Container]:
        found = await self._pods(namespace)
        selector = {L_NAMESPACE: namespace} if namespace is not None else {}
        with self.conn.errors("containers"):
            listed = await self.conn.runtime.ListContainers(
                pb.ListContainersRequest(filter=pb.ContainerFilter(label_selector=selector)), timeout=CALL)
        by_pod: dict[str, list[pb.Container]] = {}
        for c in listed.containers:
            by_pod.setdefault(c.pod_sandbox_id, []).append(c)

        async def one(pod: pb.PodSandbox) -> Container | None:
            made = Made.of(pod.annotations)
            current = mapping.latest(by_pod.get(pod.id, []))
            status, ip = current, None
            try:
                if current is not None and current.state == pb.CONTAINER_EXITED:
                    status = (await self._status(current.id, pod=pod.id)).status
                if pod.state == pb.SANDBOX_READY and made is not None and _network(made) == "bridge":
                    ip = await self._ip(pod.id)
            except NotFound:  # removed since it was listed
                return None
            if made is not None and current is not None and current.state == pb.CONTAINER_RUNNING:
                await self._rotate(made, current)
            return mapping.container(pod, made, status, ip=ip)

        return [c for c in await asyncio.gather(*(one(p) for p in found)) if c is not None]

    async def _rotate(self, made: Made, current: pb.Container) -> None:
        """Rotates a running container's log when it is past its size, as the kubelet does."""
        path = Path(made.pod.log_directory) / mapping.log_path(current.metadata.name, current.metadata.attempt)
        if await asyncio.to_thread(logs.rotate, path, *logs.limits()):
            with contextlib.suppress(grpc.RpcError):  # it may have exited meanwhile: it writes no more
                await self.conn.runtime.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=current.id),
                                                           timeout=CALL)

    async def logs(self, id: str, *, follow: bool = False, tail: int | None = None) -> AsyncIterator[LogLine]:
        _, made, current = await self._current(id)
        if current is None:
            return
        path = Path(made.pod.log_directory) / mapping.log_path(current.metadata.name, current.metadata.attempt)
        if current.state == pb.CONTAINER_RUNNING:
            await self._rotate(made, current)

        async def alive() -> bool:
            try:
                return await self._state(current.id, id) == pb.CONTAINER_RUNNING
            except NotFound:
                return False

        async for line in logs.read(path, tail=tail, follow=follow, alive=alive):
            yield line

    async def exec_terminal(self, id: str, argv: Sequence[str], *, stdin: int | None, stdout: int,
                            env: dict[str, str] | None = None, user: str | None = None,
                            workdir: str | None = None) -> int:
        from . import streaming

        _no_exec_options(id, env, user, workdir)
        _, status = await self._running(id)
        what = f"container {id}: exec {argv[0] if argv else ''}"
        try:
            answer = await self.conn.runtime.Exec(pb.ExecRequest(container_id=status.status.id, cmd=list(argv),
                                                                 tty=True, stdin=stdin is not None, stdout=True),
                                                  timeout=CALL)
        except grpc.RpcError as e:
            raise self.conn.translate(e, what, id) from None
        return await streaming.terminal(answer.url, stdin, stdout, what)

    async def exec(
        self, id: str, argv: Sequence[str], *, env: dict[str, str] | None = None, user: str | None = None,
        workdir: str | None = None, timeout: float | None = None, output: Callable[[LogLine], None] | None = None,
        output_limit: int = EXEC_OUTPUT_LIMIT,
    ) -> ExecResult:
        _no_exec_options(id, env, user, workdir)
        _, status = await self._running(id)
        seconds = math.ceil(timeout) if timeout else 0
        collected = ExecOutput(output, output_limit)
        try:
            answer = await self.conn.runtime.ExecSync(
                pb.ExecSyncRequest(container_id=status.status.id, cmd=list(argv), timeout=seconds),
                timeout=seconds + CALL if seconds else None)
        except grpc.RpcError as e:
            if code(e) == grpc.StatusCode.DEADLINE_EXCEEDED:
                # the runtime kills the command at its deadline and says so
                raise Timeout(f"container {id}: {argv[0]} ran past its {timeout:g}s deadline and was killed",
                              runtime=RUNTIME, container=id) from None
            if code(e) == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise RuntimeFailure(f"container {id}: {argv[0]} wrote more than the {MAX_MESSAGE >> 20} MiB the runtime "
                                     "may answer ExecSync with (CRI returns an exec's output whole)",
                                     runtime=RUNTIME, container=id) from None
            raise self.conn.translate(e, f"container {id}: exec {argv[0]}", id) from None
        if seconds and answer.exit_code == -1 and answer.stderr == CRIO_TIMED_OUT:
            # CRI-O answers a command it killed at its deadline so, where containerd fails the call
            raise Timeout(f"container {id}: {argv[0]} ran past its {timeout:g}s deadline and was killed",
                          runtime=RUNTIME, container=id)
        collected.add("stdout", answer.stdout)
        collected.add("stderr", answer.stderr)
        return collected.result(answer.exit_code)

    async def wait(self, id: str) -> int:
        _, _, current = await self._current(id)
        pause = POLL / 10  # short containers end within a few looks; long ones are looked at every POLL
        while True:
            if current is not None:
                status = (await self._status(current.id, pod=id)).status
                if status.state == pb.CONTAINER_EXITED:
                    return status.exit_code
            await anyio.sleep(pause)
            pause = min(POLL, pause * 1.5)
            if current is None:
                _, _, current = await self._current(id)

    async def stats(self, id: str) -> Stats:
        made, status = await self._running(id)
        with self.conn.errors(f"container {id}", container=id):
            sample = (await self.conn.runtime.ContainerStats(
                pb.ContainerStatsRequest(container_id=status.status.id), timeout=CALL)).stats
        try:
            pod = (await self.conn.runtime.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=id),
                                                           timeout=CALL)).stats
        except grpc.RpcError:
            pod = None  # the runtime keeps no pod stats: no network figures
        limit = made.container.linux.resources.memory_limit_in_bytes or None
        pid = _info_pid(dict(status.info))
        return mapping.stats(sample, pod, memory_limit=limit, pids=cgroups.current_pids(pid) if pid else None)

    # -- events -------------------------------------------------------------------------------------

    def events(self) -> AsyncIterator[Event]:
        # The first look is taken now, not at the first iteration, so that the stream holds every change after
        # this call: one blocking round trip to the runtime.
        channel, stub = self.conn.sync_runtime()
        try:
            seen = events.views(list(stub.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=CALL).items),
                                list(stub.ListContainers(pb.ListContainersRequest(), timeout=CALL).containers))
        except grpc.RpcError as e:
            raise self.conn.translate(e, "pod sandboxes") from None
        finally:
            channel.close()
        return self._events(seen)

    async def _look(self, seen: dict[str, events.View]) -> dict[str, events.View]:
        """A new look at every pod, with the exit codes of those that ended since seen."""
        with self.conn.errors("pod sandboxes"):
            pods_ = list((await self.conn.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=CALL)).items)
            containers = list((await self.conn.runtime.ListContainers(pb.ListContainersRequest(),
                                                                       timeout=CALL)).containers)
        now = events.views(pods_, containers)
        for id, view in now.items():
            if events.needs_exit_code(seen.get(id), view):
                with contextlib.suppress(NotFound):
                    now[id] = replace(view, exit_code=(await self._status(view.container, pod=id)).status.exit_code)
        return now

    async def _events(self, seen: dict[str, events.View]) -> AsyncIterator[Event]:
        stream = self.conn.runtime.GetContainerEvents(pb.GetEventsRequest())
        try:
            while True:
                if stream is not None:
                    try:
                        # a change: look again (what happened is read from the look)
                        if await stream.read() is grpc.aio.EOF:
                            stream = None  # CRI-O without enable_pod_events ends the stream at once: poll
                    except grpc.RpcError as e:
                        if code(e) != grpc.StatusCode.UNIMPLEMENTED:
                            raise self.conn.translate(e, "container events") from None
                        stream = None  # the runtime streams no events (containerd before 1.7): poll
                else:
                    await anyio.sleep(EVENTS_POLL)
                now = await self._look(seen)
                for event in events.diff(seen, now):
                    yield event
                seen = now
        finally:
            if stream is not None:
                stream.cancel()

    async def reattach(self) -> list[Container]:
        # Pod directories and cgroups whose pod the runtime no longer has (a delete cut short) are removed.
        everyone = await self._pods()
        alive = {p.metadata.uid for p in everyone}
        for where in pods.existing(self.config.state_dir):
            if where.name.rpartition("_")[2] not in alive:
                await asyncio.to_thread(pods.remove, where)
        for uid in cgroups.pods() - alive:
            cgroups.remove(uid)
        return [c for c in await self.list() if c.state is State.RUNNING]

    async def close(self) -> None:
        await self.conn.close()

    # -- hosts ----------------------------------------------------------------------------------------

    async def _refresh_hosts(self, namespace: str) -> None:
        """Rewrites the /etc/hosts of every bridged pod of namespace to name every replica of it."""
        if self._hosts_lock is None:
            self._hosts_lock = anyio.Lock()
        async with self._hosts_lock:
            bridged = [(p, m) for p in await self._pods(namespace) if (m := Made.of(p.annotations)) and _network(m) == "bridge"]
            entries = []
            for p, _ in bridged:
                if p.state != pb.SANDBOX_READY:
                    continue
                with contextlib.suppress(NotFound):
                    if ip := await self._ip(p.id):
                        entries.append((ip, p.metadata.name, p.labels.get(L_SERVICE, "")))
            text = network.hosts(entries)
            for _, made in bridged:
                path = Path(made.pod.log_directory) / pods.HOSTS
                if path.parent.is_dir():
                    with contextlib.suppress(OSError):
                        network.write_hosts(path, text)


def _network(made: Made) -> str:
    """The spec's network, as the pod was made: the host's, or the pod's own with /etc/hosts (bridge) or not."""
    if made.pod.linux.security_context.namespace_options.network == pb.NODE:
        return "host"
    bridged = any(m.container_path == "/etc/hosts" and m.host_path.endswith(pods.HOSTS) for m in made.container.mounts)
    return "bridge" if bridged else "none"


def _no_exec_options(id: str, env: dict[str, str] | None, user: str | None, workdir: str | None) -> None:
    if env or user or workdir:
        raise TerminalFailure("the cri runtime cannot give an exec its own environment, user or working directory: "
                              "CRI's ExecSync takes a command alone, and so does Exec (it runs as the container's process does)",
                              runtime=RUNTIME, container=id)
