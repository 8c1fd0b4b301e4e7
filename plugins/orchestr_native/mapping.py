"""Translates between orchestr's model and the native runtime's records: a ContainerSpec and its image's config
become the container's config.json; config.json, log and event lines are read back. Pure functions, no I/O."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from orchestr.containers import volume_key
from orchestr.containers import argv as resolve_argv
from orchestr.errors import TerminalFailure
from orchestr.model import ContainerSpec, Event, EventAction, LogLine, Resources, State, Volume

from orchestr import logfile as logs

RUNTIME = "native"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def config(
    spec: ContainerSpec, image: dict, *, id: str, image_id: str, layers: list[str], directory: Path,
    volumes_dir: Path, resolv_conf: bool, created_at: str, log: dict, cgroup_version: int, start_timeout: float,
    restart_backoff: dict | None = None,
) -> dict:
    """The config.json of container id, made from spec (its volumes checked by orchestr.containers.volumes) and
    image (the "config" object of the image's config) in directory, with the image's layers bottom first.
    resolv_conf: the host has an /etc/resolv.conf for a host-network container to share. "net" is left None,
    for the network set-up to fill in. A spec no container could run from raises TerminalFailure."""
    files = {"/etc/hostname": directory / "hostname", "/etc/hosts": directory / "hosts"}
    if spec.network == "bridge" or (spec.network == "host" and resolv_conf):
        files["/etc/resolv.conf"] = directory / "resolv.conf"
    return {
        "id": id, "name": spec.name, "namespace": spec.namespace, "image": spec.image, "image_id": image_id,
        "labels": dict(spec.labels), "created_at": created_at, "hostname": spec.name, "network": spec.network,
        "net": None, "process": process(spec, image), "tty": spec.tty,
        "rootfs": {"layers": layers, "upper": str(directory / "upper"), "work": str(directory / "work"),
                   "merged": str(directory / "rootfs"), "read_only": spec.read_only},
        "mounts": [mount(spec, v, volumes_dir) for v in spec.volumes],
        "files": {k: str(v) for k, v in files.items()}, "resources": dataclasses.asdict(spec.resources),
        "restart_policy": str(spec.restart_policy), "stop_grace_period": spec.stop_grace_period,
        "log": log, "cgroup_version": cgroup_version, "start_timeout": start_timeout,
        "restart_backoff": restart_backoff,
    }


def process(spec: ContainerSpec, image: dict) -> dict:
    """What the container's first process runs, and as whom: the spec over the image's defaults."""
    env = {"PATH": DEFAULT_PATH}
    for item in image.get("Env") or []:
        key, _, value = item.partition("=")
        env[key] = value
    env.update(spec.env)
    env["HOSTNAME"] = spec.name
    return {"argv": resolve_argv(spec, image.get("Entrypoint"), image.get("Cmd")), "env": env,
            "cwd": spec.working_dir or image.get("WorkingDir") or "/", "user": spec.user or image.get("User") or "",
            "init": spec.init, "seccomp": spec.seccomp != "unconfined"}


def mount(spec: ContainerSpec, v: Volume, volumes_dir: Path) -> dict:
    """The mount of a checked volume; a named volume is a directory of volumes_dir, per namespace."""
    if v.target == "/proc" or v.target.startswith("/proc/"):
        raise TerminalFailure(f"container {spec.name}: volume {v.target!r}: nothing may be mounted over or "
                              "inside /proc")
    if v.type == "tmpfs":
        return {"type": "tmpfs", "source": None, "target": v.target, "read_only": v.read_only,
                "size": v.tmpfs_size}
    source = str(volumes_dir / volume_key(spec.namespace, v.source or "")) if v.type == "volume" else v.source
    return {"type": v.type, "source": source, "target": v.target, "read_only": v.read_only,
            "allow_host_root": v.allow_host_root}


def resources(config: dict) -> Resources:
    """The container's limits; an orchestr from before "resources" kept them under "limits", in the same shape."""
    return Resources(**(config["resources"] if "resources" in config else config["limits"]))


def updated(old: Resources, new: Resources) -> Resources:
    """old with what new gives: an update leaves the limits it does not name as they are."""
    return Resources(*(n if n is not None else o for o, n in zip(dataclasses.astuple(old), dataclasses.astuple(new))))


def log_line(raw: bytes) -> LogLine | None:
    parsed = logs.parse(raw)
    return LogLine(stream=parsed[0], data=parsed[1], time=parsed[2]) if parsed else None


def event(raw: bytes) -> Event | None:
    """An Event from a line of the event log (records.append_event); None for a torn or foreign line."""
    try:
        e = json.loads(raw)
        return Event(runtime=RUNTIME, id=e["id"], name=e["name"], namespace=e["namespace"],
                     action=EventAction(e["action"]), state=State(e["state"]) if e.get("state") else None,
                     exit_code=e.get("exit_code"), time=e.get("time"), restarts=e.get("restarts"),
                     delay=e.get("delay"))
    except (ValueError, KeyError):
        return None
