"""What the numbers were measured on: hardware, kernel, distribution, cgroups, and every tool's version."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from context import ROOT, VENV_BIN, Context


def facts() -> dict[str, str]:
    cpuinfo = _read("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    mem_kb = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal:")), 0)
    release = dict(
        line.split("=", 1) for line in _read("/etc/os-release").splitlines() if "=" in line
    )
    distro = release.get("PRETTY_NAME", "unknown").strip('"')
    if debian := _read("/etc/debian_version").strip():
        distro += f" ({debian})"
    return {
        "CPU": model,
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kb / 2**20:.1f} GiB",
        "kernel": platform.release(),
        "distribution": distro,
        "cgroups": cgroup_version(),
        "load average at start": load_average(),
    }


def load_average() -> str:
    """Other work on the machine skews every number; the report says how busy it was."""
    return " ".join(_read("/proc/loadavg").split()[:3]) + " (1, 5, 15 min)"


def cgroup_version() -> str:
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "v2 (unified)"
    if os.path.ismount("/sys/fs/cgroup/unified"):
        controllers = _read("/sys/fs/cgroup/unified/cgroup.controllers").split()
        return f"v1 (hybrid: cgroup2 at /sys/fs/cgroup/unified, controllers: {' '.join(controllers) or 'none'})"
    return "v1"


def versions(ctx: Context) -> dict[str, str]:
    import orchestr

    commit = _first(ctx, ["git", "-C", ROOT, "describe", "--always", "--dirty"])
    return {
        "python": f"{platform.python_version()} ({sys.executable})",
        "orchestr": f"{orchestr.__version__} ({commit}), {VENV_BIN / 'orchestr'}",
        "runc": _first(ctx, ["runc", "--version"]),
        "crun": _first(ctx, ["crun", "--version"]),
        "containerd": _first(ctx, ["containerd", "--version"]),
        "ctr": _first(ctx, ["ctr", "--version"]),
        "docker engine": _first(ctx, ["docker", "version", "--format", "{{.Server.Version}}"]),
        "docker client": _first(ctx, ["docker", "version", "--format", "{{.Client.Version}}"]),
        "docker-compose": _first(ctx, ["docker-compose", "version", "--short"]),
        "docker-registry": _first(ctx, ["docker-registry", "--version"]),
        "skopeo": _first(ctx, ["skopeo", "--version"]),
        "tar": _first(ctx, ["tar", "--version"]),
        "matplotlib": _module_version("matplotlib"),
    }


def _first(ctx: Context, argv: list) -> str:
    if not shutil.which(str(argv[0]), path=ctx.env["PATH"]):
        return "not installed"
    try:
        proc = ctx.sh(argv, check=False, timeout=30)
    except subprocess.TimeoutExpired:
        return "does not answer"
    text = (proc.stdout or proc.stderr).decode(errors="replace").strip()
    return text.splitlines()[0] if text else f"unknown (exit status {proc.returncode})"


def _module_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
