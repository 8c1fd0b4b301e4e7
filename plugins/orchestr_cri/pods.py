"""A pod's directory on this host, under the state dir's cri/pods/: the log directory the runtime writes the
container's output to, the /etc/hosts orchestr keeps, and the volumes CRI cannot make itself.

CRI mounts host paths only, as the kubelet hands it its volumes: a named volume is a directory of orchestr's
(cri/volumes/<namespace>_<name>, kept when its pods go, as Docker keeps volumes), a tmpfs volume a tmpfs
orchestr mounts in the pod's directory (as the kubelet mounts a memory-backed emptyDir), removed with the pod.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

from orchestr.config import private_dir
from orchestr.containers import volume_key
from orchestr.errors import RuntimeFailure
from orchestr.model import ContainerSpec

from .proto import cri_pb2 as pb

RUNTIME = "cri"
HOSTS = "etc-hosts"


def root(state_dir: Path) -> Path:
    return Path(state_dir) / "cri"


def pod_dir(state_dir: Path, namespace: str, name: str, uid: str) -> Path:
    """The kubelet's naming of a pod's log directory: <namespace>_<name>_<uid>."""
    return root(state_dir) / "pods" / f"{namespace}_{name}_{uid}"


def make(path: Path) -> Path:
    return private_dir(path)


def mounts(spec: ContainerSpec, path: Path, state_dir: Path, *,
           recursive_read_only: bool) -> tuple[list[pb.Mount], tuple[tuple[str, int], ...]]:
    """The container's mounts for spec's checked volumes (orchestr.containers.volumes) and, on the bridge, its
    /etc/hosts; and the tmpfs volumes to mount first (see mount_tmpfs), as (host path, size)."""
    found, tmpfs = [], []
    for index, v in enumerate(spec.volumes):
        if v.type == "bind":
            source = Path(v.source or "")
        elif v.type == "volume":
            source = private_dir(root(state_dir) / "volumes") / volume_key(spec.namespace, v.source or "")
            source.mkdir(mode=0o755, exist_ok=True)
        else:
            source = path / "tmpfs" / str(index)
            tmpfs.append((str(source), v.tmpfs_size))
        found.append(pb.Mount(container_path=v.target, host_path=str(source), readonly=v.read_only,
                              recursive_read_only=v.read_only and recursive_read_only))
    if spec.network == "bridge":
        found.append(pb.Mount(container_path="/etc/hosts", host_path=str(path / HOSTS), readonly=True))
    return found, tuple(tmpfs)


def owned(path: Path) -> bool:
    """Whether path is a pod directory as orchestr names them (<state>/cri/pods/<namespace>_<name>_<uid>), so
    that what a pod's annotation says is never taken for a place elsewhere on the host."""
    return path.is_absolute() and path.parent.name == "pods" and path.parent.parent.name == "cri" \
        and path.name.count("_") >= 2 and ".." not in path.parts


def mount_tmpfs(pod: Path, volumes: tuple[tuple[str, int], ...]) -> None:
    """Mounts each (host path, size) tmpfs of the pod's that is not mounted yet (a reboot unmounts them); only
    ever under the pod's own directory."""
    for where, size in volumes:
        source = Path(where)
        if not owned(pod) or source.parent != pod / "tmpfs" or not source.name.isdigit():
            raise RuntimeFailure(f"a tmpfs volume at {where} is not in its pod's directory {pod}", runtime=RUNTIME)
        source.mkdir(parents=True, exist_ok=True)
        if not source.is_mount():
            _run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=1777,nosuid,nodev", "tmpfs", where],
                 f"cannot mount a tmpfs volume at {where}")


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeFailure(f"{what}: {done.stderr.strip()}", runtime=RUNTIME)


def remove(path: Path) -> None:
    """Unmounts the pod's tmpfs volumes and removes its directory, logs and all."""
    tmpfs = path / "tmpfs"
    with contextlib.suppress(OSError):
        for mount in tmpfs.iterdir():
            if mount.is_mount():
                _run(["umount", str(mount)], f"cannot unmount {mount}")
    shutil.rmtree(path, ignore_errors=True)


def existing(state_dir: Path) -> list[Path]:
    with contextlib.suppress(OSError):
        return [p for p in (root(state_dir) / "pods").iterdir() if p.is_dir()]
    return []
