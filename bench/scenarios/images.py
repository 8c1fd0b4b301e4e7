"""Scenario 7: importing a large multi-layer image, and pulling it from a registry on the loopback."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

from context import Context, mkimage
from harness import Contender, Goal, Skip, compare

ID = "images"
TITLE = "Image import and pull"
DESCRIPTION = (
    "A busybox image with incompressible filler layers (orchestr.testing.images.busybox_image(extra_mb=...)). "
    "Import: `orchestr images import` of the `docker save` archive against plain `tar -x` of each of its "
    "layers into a fresh directory, and `docker load`. Pull: from Debian's docker-registry on 127.0.0.1, "
    "filled with `skopeo copy`, with `orchestr images pull` against `docker pull`. The image is removed "
    "(untimed) after every run."
)
NOTES = [
    "`tar -x` only unpacks: it neither reads the outer archive nor checks digests, so it bounds import from below.",
    "The 2 MB busybox base layer is already in orchestr's and Docker's stores (the probe image shares it), "
    "so they add only the filler layers; `tar -x` unpacks every layer.",
]

NATIVE_IMPORT, DOCKER_IMPORT = "orchestr images import --runtime native", "orchestr images import --runtime docker"
NATIVE_PULL, DOCKER_PULL = "orchestr images pull --runtime native", "orchestr images pull --runtime docker"


def run(ctx: Context) -> list[dict]:
    mb, repeat, warmup = (10, 1, 0) if ctx.quick else (200, 5, 1)
    archive = ctx.work / "big.tar"
    ref = f"orchestr-bench/big:{ctx.run_id}"
    mkimage.busybox_image(archive, [ref], extra_mb=mb, labels={"org.orchestr.bench": "1"})
    imports = [
        Contender(NATIVE_IMPORT, lambda: orchestr_import(ctx, archive, ref, "native")),
        Contender(DOCKER_IMPORT, lambda: orchestr_import(ctx, archive, ref, "docker")),
        Contender("tar -x of each layer", lambda: untar(ctx, archive), versus=(NATIVE_IMPORT,),
                  goal=Goal("orchestr at least 0.7x tar's speed (ratio <= 1.43)", max_ratio=1 / 0.7)),
        Contender("docker load", lambda: docker_load(ctx, archive, ref), versus=(DOCKER_IMPORT, NATIVE_IMPORT)),
    ]
    groups = compare(f"import {mb} MB", imports, repeat=repeat, warmup=warmup)
    with registry(ctx, archive) as remote:
        pulls = [
            Contender(NATIVE_PULL, lambda: orchestr_pull(ctx, remote, "native")),
            Contender(DOCKER_PULL, lambda: orchestr_pull(ctx, remote, "docker")),
            Contender("docker pull", lambda: docker_pull(ctx, remote), versus=(DOCKER_PULL, NATIVE_PULL)),
        ]
        groups += compare(f"pull {mb} MB", pulls, repeat=repeat, warmup=warmup)
        if remote is not None:
            pulled_then_imported(ctx, remote, archive)
    return groups


def pulled_then_imported(ctx: Context, remote: str, archive: Path) -> None:
    """Notes what importing the `docker save` archive of an image already pulled adds to the native store."""
    state = ctx.tempdir("pulled-then-imported")
    base = ctx.orchestr("--state-dir", state)
    images = state / "native" / "images"
    ctx.sh([*base, "images", "pull", "--runtime", "native", remote])
    pulled = _bytes(images)
    ctx.sh([*base, "images", "import", "--runtime", "native", archive])
    added = (_bytes(images) - pulled) / pulled * 100
    met = "met" if added < 5 else "NOT MET"
    ctx.note(f"Importing the `docker save` archive of the image after pulling it (gzip layers) adds {added:.1f} % "
             f"to the native store ({pulled / 2**20:.0f} MiB after the pull; goal: under 5 %: {met}): a layer "
             "unpacked already keeps a tar-split of the archive's tar rather than a copy of it.")


def _bytes(root: Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def forget(ctx: Context, runtime: str, ref: str) -> None:
    """Removes ref and whatever layers only it used, so the next run starts from nothing."""
    if runtime == "docker":
        ctx.sh(["docker", "rmi", "-f", ref], check=False)
    else:
        ctx.sh(ctx.orchestr("images", "rm", "--runtime", runtime, "--force", ref), check=False)
        ctx.sh(ctx.orchestr("images", "prune", "--runtime", runtime), check=False)


@contextlib.contextmanager
def orchestr_import(ctx: Context, archive: Path, ref: str, runtime: str):
    ctx.orchestr_runtime(runtime)
    with fresh_each_time(ctx, ctx.orchestr("images", "import", "--runtime", runtime, archive), runtime, ref) as trial:
        yield trial


@contextlib.contextmanager
def fresh_each_time(ctx: Context, argv: list, runtime: str, ref: str):
    """Trials of argv, each starting and ending with ref gone from orchestr's runtime."""
    def trial() -> float:
        try:
            return ctx.timed(argv)
        finally:
            forget(ctx, runtime, ref)
    forget(ctx, runtime, ref)
    try:
        yield trial
    finally:
        forget(ctx, runtime, ref)


@contextlib.contextmanager
def untar(ctx: Context, archive: Path):
    ctx.need("tar")
    layers_dir = ctx.tempdir("big-layers")
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        layers = []
        for i, name in enumerate(manifest[0]["Layers"]):
            path = layers_dir / f"{i}.tar"
            with outer.extractfile(name) as src, path.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            layers.append(path)
    target = ctx.work / "big-untar"

    def trial() -> float:
        dirs = [target / str(i) for i in range(len(layers))]
        for d in dirs:
            d.mkdir(parents=True)
        try:
            t0 = time.perf_counter()
            for layer, d in zip(layers, dirs):
                ctx.sh(["tar", "-xf", layer, "-C", d])
            return time.perf_counter() - t0
        finally:
            shutil.rmtree(target)
    try:
        yield trial
    finally:
        shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(layers_dir, ignore_errors=True)


@contextlib.contextmanager
def docker_load(ctx: Context, archive: Path, ref: str):
    ctx.docker_image()

    def trial() -> float:
        try:
            return ctx.timed(["docker", "load", "-q", "-i", archive])
        finally:
            forget(ctx, "docker", ref)
    forget(ctx, "docker", ref)
    try:
        yield trial
    finally:
        forget(ctx, "docker", ref)


@contextlib.contextmanager
def registry(ctx: Context, archive: Path):
    """Debian's docker-registry on a free loopback port, holding the image; yields its remote ref."""
    try:
        ctx.need("docker-registry", "skopeo")
    except Skip:
        yield None
        return
    root = ctx.tempdir("registry")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = root / "config.yml"
    config.write_text(json.dumps({
        "version": 0.1,
        "log": {"level": "error"},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }))
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=(root / "log").open("wb"), env=ctx.env)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry did not answer on 127.0.0.1:{port}: "
                                       f"{(root / 'log').read_text()[-300:]}") from None
                time.sleep(0.1)
        remote = f"127.0.0.1:{port}/bench/big:latest"
        ctx.sh(["skopeo", "copy", "--dest-tls-verify=false", f"docker-archive:{archive}", f"docker://{remote}"])
        yield remote
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def no_registry(remote: str | None) -> None:
    if remote is None:
        raise Skip("docker-registry or skopeo is not installed")


@contextlib.contextmanager
def orchestr_pull(ctx: Context, remote: str | None, runtime: str):
    no_registry(remote)
    ctx.orchestr_runtime(runtime)
    with fresh_each_time(ctx, ctx.orchestr("images", "pull", "--runtime", runtime, remote), runtime, remote) as trial:
        yield trial


@contextlib.contextmanager
def docker_pull(ctx: Context, remote: str | None):
    no_registry(remote)
    ctx.docker_image()

    def trial() -> float:
        try:
            return ctx.timed(["docker", "pull", "-q", remote])
        finally:
            forget(ctx, "docker", remote)
    forget(ctx, "docker", remote)
    try:
        yield trial
    finally:
        forget(ctx, "docker", remote)
