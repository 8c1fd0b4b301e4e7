"""The native runtime's containers on disk, one state dir's: where each one's records live and how they read
back, the lock over them, and what every verb shares (the image store, the supervisor, cgroups, the network)."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from orchestr.config import Config, private, private_dir
from orchestr.containers import UNKNOWN_EXIT
from orchestr.errors import NotFound, TerminalFailure
from orchestr.model import L_NAMESPACE, Container, Port, State

from . import cgroups
from .mapping import RUNTIME
from .supervisor import records

if TYPE_CHECKING:
    from .network import Network
    from .supervisor.client import SupervisorClient

MiB = 1 << 20
_ID = re.compile(r"[0-9a-f]{64}")


class ImageStore(Protocol):
    def resolve(self, ref: str) -> str: ...
    def image_config(self, ref_or_id: str) -> dict: ...
    def layer_paths(self, ref_or_id: str) -> list[Path]: ...


class ContainerStore:
    """Containers of one state dir; state_dir/native/containers/<id> holds each one's records and layers.

    Reading them back (load, view, listed) needs no more than this module's imports: `orchestr get` lists hundreds
    with them alone. images may be None for a store that only reads."""

    def __init__(self, config: Config, images: ImageStore | None, *, log_max_size: int = 10 * MiB,
                 log_max_files: int = 3, start_timeout: float = 30.0):
        if os.geteuid() != 0:  # and it will not come to have it: no retry can help
            raise TerminalFailure("the native runtime needs root (rootless mode is not supported)", runtime=RUNTIME)
        self.root = Path(config.state_dir) / "native"
        self.dir = self.root / "containers"
        self.volumes = self.root / "volumes"
        self.images = images
        self._limits = {"log": {"max_size": log_max_size, "max_files": log_max_files},
                        "start_timeout": start_timeout}  # for a container's first process to exec its command
        # by container id: the networks this process's creates are still making (lifecycle._Attaching)
        self.attaching: dict[str, Any] = {}

    @functools.cached_property
    def settings(self) -> dict:
        """What every container's config.json gets from this runtime rather than from its spec."""
        from orchestr.backoff import from_env

        return {**self._limits, "cgroup_version": self.cgroup_version,
                "restart_backoff": from_env().as_dict()}  # read by the supervisor at each restart

    @functools.cached_property
    def supervisor(self) -> SupervisorClient:
        from .supervisor.client import SupervisorClient

        return SupervisorClient(str(self.root))

    @functools.cached_property
    def cgroup_version(self) -> int:
        return cgroups.version()

    @functools.cached_property
    def network(self) -> Network:
        from .network import Network  # loads only for containers that have a bridge network, and for sweeps

        return Network(self.root)

    def cgroup(self, id: str) -> cgroups.Manager:
        return cgroups.manager(id, cgroup_version=self.cgroup_version)

    def load(self, id: str) -> tuple[dict, dict]:
        """The container's config.json and state.json."""
        where = f"{self.dir}/{id}/"  # not Path's /: a listing loads hundreds
        config = records.read_json(where + records.CONFIG) if _ID.fullmatch(id) else None
        if config is None:
            raise NotFound(f"no native container with id {id!r}")
        return config, records.read_json(where + records.STATE) or {"status": "created"}

    def ids(self) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self.dir) if _ID.fullmatch(e.name))
        except FileNotFoundError:
            return []

    def names(self) -> dict[str, tuple[str, str]]:
        """id -> (namespace, name) of every container with a config. A name never changes, so each config is
        read once per process: a create checks its name against all of them, hundreds in one apply."""
        known = self.__dict__.setdefault("_names", {})
        ids = self.ids()
        for id in set(known) - set(ids):
            del known[id]
        for id in ids:
            if id not in known:
                config = records.read_json(str(self.dir / id / records.CONFIG))
                if config:  # else not written yet (or a half-made create): looked at again next time
                    known[id] = (config["namespace"], config["name"])
        return {id: known[id] for id in ids if id in known}

    def listed(self, namespace: str | None = None) -> list[Container]:
        """Every container (of namespace), as view() shows it: read from files and /proc only."""
        out = []
        alive: dict[tuple, bool] = {}  # one supervisor keeps them all: its /proc entry is read once, not per container
        for id in self.ids():
            where = f"{self.dir}/{id}/"
            config = records.read_json(where + records.CONFIG)
            if config is None:
                continue  # deleted meanwhile, or still being created
            if namespace is None or config["labels"].get(L_NAMESPACE, config["namespace"]) == namespace:
                state = records.read_json(where + records.STATE) or {"status": "created"}  # as load() has it
                out.append(self.view(config, state, alive))
        return out

    def view(self, config: dict, state: dict, alive: dict[tuple, bool] | None = None) -> Container:
        """The container as its records and the processes behind them show it now. alive: what earlier views of
        the same listing found of supervisors' lives, to look each one up once."""
        status = State(state.get("status", "created"))
        exit_code = state.get("exit_code")
        next_restart = None
        if status is State.EXITED and supervised(state, alive):  # waiting out its back-off
            next_restart = state.get("next_restart")
        elif status is State.RUNNING:
            if not supervised(state, alive):
                status, exit_code = State.EXITED, exit_code if state.get("finished_at") else UNKNOWN_EXIT
            elif cgroups.manager(config["id"], cgroup_version=config.get("cgroup_version")
                                 or self.cgroup_version).frozen():
                status = State.PAUSED
        running = status in (State.RUNNING, State.PAUSED)
        return Container(
            id=config["id"], name=config["name"], namespace=config["namespace"], runtime=RUNTIME,
            image=config["image"], state=status, labels=dict(config["labels"]),
            exit_code=None if running or status is State.CREATED else exit_code,
            pid=(state.get("init") or {}).get("pid") if running else None,
            ip=(config.get("net") or {}).get("ip"), oom_killed=bool(state.get("oom_killed")),
            restarts=state.get("restart_count", 0),
            ports=tuple(Port(p["container_port"], p["host_port"], p["protocol"], p["host_ip"])
                        for p in (config.get("net") or {}).get("ports") or ()),
            created_at=config["created_at"],
            started_at=state.get("started_at"), finished_at=None if running else state.get("finished_at"),
            log_lines_dropped=state.get("log_lines_dropped", 0), next_restart=next_restart,
        )

    def event(self, config: dict, action: str, state: State | None = None, exit_code: int | None = None) -> None:
        records.append_event(str(self.root), {
            "id": config["id"], "name": config["name"], "namespace": config["namespace"], "action": action,
            "state": str(state) if state else None, "exit_code": exit_code,
        })

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        private_dir(self.root)  # tightens an older orchestr's 0755 ones
        private_dir(self.dir)
        with open(self.root / "containers.lock", "w", opener=private) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def supervised(state: dict, alive: dict[tuple, bool] | None = None) -> bool:
    """Whether a live supervisor still looks after the container (running, or waiting to restart it); alive
    remembers each supervisor's answer (see view)."""
    if not state.get("supervised"):
        return False
    if alive is None:
        return records.alive(state.get("supervisor"))
    ident = state.get("supervisor") or {}
    key = (ident.get("pid"), ident.get("start"), ident.get("boot"))
    if key not in alive:
        alive[key] = records.alive(ident)
    return alive[key]
