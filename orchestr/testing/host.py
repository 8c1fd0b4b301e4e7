"""What the host sees of a container's processes: their cgroups and limits (v1 and v2), and processes by argv.

Everything is read from the host's /proc and cgroup files through a host pid, as an administrator would check,
so the kit relies on nothing a runtime reports about itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

V2 = ""  # the key of the unified (v2) hierarchy among the per-controller ones
CONTROLLERS = ("memory", "cpu", "pids")


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits as the kernel holds them; None where there is none (or the controller is not there)."""

    cpus: float | None
    memory: int | None
    pids: int | None
    files: tuple[Path, ...]  # the cgroup files they were read from


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _mounts(proc: Path) -> dict[str, tuple[str, Path]]:
    """controller (V2 for the unified hierarchy) -> (the hierarchy's path at the mount, the mount point)."""
    found: dict[str, tuple[str, Path]] = {}
    for line in (proc / "self" / "mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, (fstype, _source, options) = left.split(), right.split()[:3]
        where = (_unescape(fields[3]), Path(_unescape(fields[4])))
        if fstype == "cgroup2":
            found.setdefault(V2, where)
        elif fstype == "cgroup":
            for option in options.split(","):
                found.setdefault(option, where)
    return found


def cgroup_dirs(pid: int | str, proc: Path | str = "/proc") -> dict[str, Path]:
    """controller -> the host directory of pid's cgroup for it (V2 for the unified hierarchy, where mounted);
    pid may be "self"."""
    proc = Path(proc)
    mounts = _mounts(proc)
    dirs: dict[str, Path] = {}
    for line in (proc / str(pid) / "cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [V2]:
            if controller in mounts:
                root, point = mounts[controller]
                dirs[controller] = point / os.path.relpath(path, root)
    return dirs


def _value(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def limits(pid: int, proc: Path | str = "/proc") -> Limits:
    """The cpu, memory and pids limits of pid's cgroups: v1 controllers where mounted, else the v2 files."""
    dirs = cgroup_dirs(pid, proc)
    unified = dirs.get(V2)
    files: list[Path] = []

    def pick(v1_controller: str, v1_file: str, v2_file: str) -> tuple[str, str | None]:
        if v1_controller in dirs:
            path, version = dirs[v1_controller] / v1_file, "v1"
        elif unified is not None:
            path, version = unified / v2_file, "v2"
        else:
            return "none", None
        value = _value(path)
        if value is not None:
            files.append(path)
        return version, value

    version, raw = pick("memory", "memory.limit_in_bytes", "memory.max")
    memory = None if raw in (None, "max") else int(raw)
    if version == "v1" and memory is not None and memory >= 1 << 62:  # v1's "unlimited" is a huge page-aligned number
        memory = None
    version, raw = pick("cpu", "cpu.cfs_quota_us", "cpu.max")
    cpus = None
    if version == "v1" and raw not in (None, "-1"):
        period = _value(dirs["cpu"] / "cpu.cfs_period_us")
        cpus = int(raw) / int(period) if period else None
    elif version == "v2" and raw is not None and not raw.startswith("max"):
        quota, period = raw.split()
        cpus = int(quota) / int(period)
    _, raw = pick("pids", "pids.max", "pids.max")
    pids = None if raw in (None, "max") else int(raw)
    return Limits(cpus, memory, pids, tuple(files))


def processes(argv: list[str], proc: Path | str = "/proc") -> list[int]:
    """Pids of the host's live processes whose command line is exactly argv."""
    want = b"\0".join(a.encode() for a in argv) + b"\0"
    found = []
    for entry in Path(proc).iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:  # ended meanwhile
            continue
        if cmdline == want and state not in "ZX":
            found.append(int(entry.name))
    return found
