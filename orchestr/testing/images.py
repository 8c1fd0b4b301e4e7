"""Builds container images offline from busybox-static, written as `docker save` archives.

Used by the conformance kit, the demo, the tests and the benchmarks: no registry on the internet is needed.
    python -m orchestr.testing.images OUT.tar [--ref busybox:latest] [--extra-mb N]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path

BUSYBOX = Path(os.environ.get("ORCHESTR_BUSYBOX", "/bin/busybox"))
EPOCH = 1700000000  # fixed mtime, so the same inputs give the same digests
CREATED = "2023-11-14T22:13:20Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    "www-data:x:33:33:www-data:/var/www:/bin/false\n"
    "app:x:1000:1000:app:/home/app:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\ndaemon:x:1:\nwww-data:x:33:\napp:x:1000:\nnogroup:x:65534:\n"


class Layer:
    """An uncompressed layer tarball being built in memory, entries in insertion order."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buf, mode="w", format=tarfile.PAX_FORMAT)

    def _info(self, name: str, type_: bytes, mode: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name.lstrip("/"))
        info.type, info.mode, info.uid, info.gid, info.mtime = type_, mode, uid, gid, EPOCH
        return info

    def dir(self, name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Layer:
        self._tar.addfile(self._info(name, tarfile.DIRTYPE, mode, uid, gid))
        return self

    def file(self, name: str, data: bytes | str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Layer:
        raw = data.encode() if isinstance(data, str) else data
        info = self._info(name, tarfile.REGTYPE, mode, uid, gid)
        info.size = len(raw)
        self._tar.addfile(info, io.BytesIO(raw))
        return self

    def symlink(self, name: str, target: str) -> Layer:
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self._tar.addfile(info)
        return self

    def hardlink(self, name: str, target: str) -> Layer:
        info = self._info(name, tarfile.LNKTYPE, 0o644)
        info.linkname = target.lstrip("/")
        self._tar.addfile(info)
        return self

    def whiteout(self, path: str) -> Layer:
        """Marks path as deleted from the layers below (an OCI whiteout)."""
        head, _, base = path.strip("/").rpartition("/")
        return self.file(f"{head}/.wh.{base}" if head else f".wh.{base}", b"", 0o600)

    def opaque(self, directory: str) -> Layer:
        """Hides everything the layers below have in directory (an OCI opaque whiteout)."""
        return self.file(f"{directory.strip('/')}/.wh..wh..opq", b"", 0o600)

    def raw(self, info: tarfile.TarInfo, data: bytes | None = None) -> Layer:
        """Adds an entry exactly as given: for hostile-archive tests."""
        if data is not None:
            info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return self

    def bytes(self) -> bytes:
        self._tar.close()
        return self._buf.getvalue()


def busybox_applets() -> list[str]:
    out = subprocess.run([str(BUSYBOX), "--list"], check=True, capture_output=True, text=True).stdout
    return sorted(a for a in out.split() if a and a != "busybox")


def busybox_layer() -> Layer:
    """A minimal root filesystem: busybox with one symlink per applet, users, groups and the usual dirs."""
    layer = Layer()
    for d in ("bin", "dev", "etc", "home", "proc", "root", "sys", "usr", "usr/bin", "var", "var/www", "run"):
        layer.dir(d, 0o700 if d == "root" else 0o755)
    layer.dir("home/app", 0o755, 1000, 1000)
    layer.dir("tmp", 0o1777)
    layer.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    for applet in busybox_applets():
        layer.symlink(f"bin/{applet}", "busybox")
    layer.file("etc/passwd", PASSWD).file("etc/group", GROUP)
    layer.file("etc/hostname", "localhost\n").file("etc/hosts", "127.0.0.1\tlocalhost\n")
    return layer


def filler_layer(megabytes: int, seed: str = "filler") -> Layer:
    """Incompressible files that make an image big, for import and pull benchmarks."""
    layer = Layer().dir("data")
    block = hashlib.sha256(seed.encode()).digest()
    for i in range(megabytes):
        chunk = bytearray()
        while len(chunk) < 1 << 20:
            block = hashlib.sha256(block).digest()
            chunk += block * 8
        layer.file(f"data/{seed}-{i:04d}.bin", bytes(chunk[: 1 << 20]))
    return layer


def write_docker_archive(
    path: Path | str,
    layers: Iterable[bytes],
    refs: Iterable[str] = ("busybox:latest",),
    *,
    cmd: Iterable[str] | None = ("sh",),
    entrypoint: Iterable[str] | None = None,
    env: Iterable[str] = (PATH_ENV,),
    workdir: str | None = None,
    user: str | None = None,
    labels: Mapping[str, str] | None = None,
    architecture: str = "amd64",
    created_by: Iterable[str] | None = None,
) -> str:
    """Writes a `docker save` archive of the given layer tarballs; returns the image id (config digest)."""
    layers = list(layers)
    created_by = list(created_by or [f"orchestr mkimage layer {i}" for i in range(len(layers))])
    diff_ids = [f"sha256:{hashlib.sha256(b).hexdigest()}" for b in layers]
    config = {
        "architecture": architecture,
        "os": "linux",
        "created": CREATED,
        "config": {
            "Env": list(env),
            "Cmd": list(cmd) if cmd is not None else None,
            "Entrypoint": list(entrypoint) if entrypoint is not None else None,
            "WorkingDir": workdir or "",
            "User": user or "",
            "Labels": dict(labels or {}),
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": CREATED, "created_by": c} for c in created_by],
    }
    config_raw = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_hex = hashlib.sha256(config_raw).hexdigest()
    out = Layer()
    layer_names = []
    for diff_id, blob in zip(diff_ids, layers):
        name = f"{diff_id.removeprefix('sha256:')}/layer.tar"
        out.file(name, blob)
        layer_names.append(name)
    out.file(f"{config_hex}.json", config_raw)
    manifest = [{"Config": f"{config_hex}.json", "RepoTags": list(refs), "Layers": layer_names}]
    out.file("manifest.json", json.dumps(manifest))
    Path(path).write_bytes(out.bytes())
    return f"sha256:{config_hex}"


def busybox_image(path: Path | str, refs: Iterable[str] = ("busybox:latest",), extra_mb: int = 0, **kw) -> str:
    layers = [busybox_layer().bytes()]
    if extra_mb:
        # several layers, so imports and pulls exercise per-layer parallelism
        per = max(1, extra_mb // 4)
        layers += [filler_layer(per, f"filler{i}").bytes() for i in range(extra_mb // per)]
    return write_docker_archive(path, layers, refs, **kw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--ref", action="append", help="name:tag (repeatable); default busybox:latest")
    parser.add_argument("--extra-mb", type=int, default=0, help="add incompressible filler layers")
    args = parser.parse_args()
    image_id = busybox_image(args.out, args.ref or ["busybox:latest"], args.extra_mb)
    print(image_id)


if __name__ == "__main__":
    main()
