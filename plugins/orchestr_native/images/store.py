"""The content-addressed image store: verified blobs, shared unpacked layers, and the reference index."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio

from orchestr.config import private, private_dir
from orchestr.errors import NotFound, RuntimeFailure
from orchestr.plain import Frozen, record
from orchestr.registry.reference import parse

from .locks import Locks, flocked, try_flock

_HEX = re.compile(r"[0-9a-f]{64}")
SPLIT = "tar-split"  # in a layer directory: its files give back the layer's tar blob (see add_layer_region)
_ID_PREFIX = re.compile(r"(?:sha256:)?([0-9a-f]{4,64})")


def hex_of(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or not _HEX.fullmatch(value):
        raise RuntimeFailure(f"unsupported digest {digest!r}: expected sha256:<64 hex>")
    return value


def digest_of(data: bytes) -> str:
    sha = _sha256()
    sha.update(data)
    return f"sha256:{sha.hexdigest()}"


def _sha256() -> Any:
    """A new SHA-256, whose module (with OpenSSL's library) loads only for an import, a pull or a check, not a run."""
    import hashlib

    return hashlib.sha256()


class BlobWriter:
    """Writes one blob to a temp file beside its final name; commit verifies, fsyncs and renames.

    Data comes through write(), hashed as it passes, or through copy_range(), copied in the kernel and
    hashed from the file at verify(), in one pass over the page cache.
    """

    def __init__(self, path: Path, digest: str, what: str) -> None:
        self.final, self.digest, self.what = path, digest, what
        self.tmp = path.with_name(f"{path.name}.tmp-{os.urandom(4).hex()}")
        self.file = open(self.tmp, "xb", buffering=1 << 20, opener=private)  # noqa: SIM115 (closed by commit or abort)
        self.sha = _sha256()
        self.size = 0
        self._copied = False  # some data came by copy_range: verify() hashes the file

    def write(self, data: bytes | memoryview) -> None:
        self.sha.update(data)
        self.file.write(data)
        self.size += len(data)

    def copy_range(self, src: int, offset: int, size: int) -> int:
        """Appends size bytes of the file src from offset, in the kernel; returns how many there were."""
        from . import unpack

        self.file.flush()
        self._copied = True
        copied = unpack.copy_file_data(src, offset, size, self.file.fileno())
        self.size += copied
        self.file.seek(self.size)
        return copied

    def reset(self) -> None:
        """Start over, after a download broke off."""
        self.file.seek(0)
        self.file.truncate()
        self.sha, self.size, self._copied = _sha256(), 0, False

    def check(self) -> None:
        """Raises unless what was written hashes to the digest."""
        self.file.flush()
        if self._copied:
            self.sha = _hash_file(self.tmp, self.size)
        got = f"sha256:{self.sha.hexdigest()}"
        if got != self.digest:
            raise RuntimeFailure(f"{self.what}: content is {got}, expected {self.digest}; refused")

    def sync(self) -> None:
        """Makes what was written durable (not yet visible)."""
        self.file.flush()
        os.fsync(self.file.fileno())

    def publish(self) -> None:
        """Renames the verified blob into place."""
        self.file.close()
        os.rename(self.tmp, self.final)

    def commit(self) -> None:
        try:
            self.check()
            self.sync()
            self.publish()
        finally:
            self.abort()

    def abort(self) -> None:
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


async def _checked(unpack: Callable[[], Awaitable[None]], *checks: Callable[[], Awaitable[None]]) -> None:
    """Runs the unpack and the checks of what it unpacks at once. A failed check is the error to report: an
    unpack of bad data tends to fail too, with a less telling message."""
    failed: dict[int, BaseException] = {}

    async def run(i: int, job: Callable[[], Awaitable[None]]) -> None:
        try:
            await job()
        except Exception as e:  # noqa: BLE001 - sorted out below
            failed[i] = e

    async with anyio.create_task_group() as tg:
        for i, job in enumerate((*checks, unpack)):
            tg.start_soon(run, i, job)
    if failed:
        raise failed[min(failed)]


def _hash_file(path: Path, size: int):  # type: ignore[no-untyped-def]
    """The hash of the file's first size bytes, read through one small buffer (it stays in the CPU's cache)."""
    sha, buf = _sha256(), bytearray(1 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while size > 0 and (n := f.readinto(view[:min(size, len(buf))])):
            sha.update(view[:n])
            size -= n
    return sha


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb", opener=private) as f:
        f.write(data)


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk


def _verified(chunks: Iterator[bytes], digest: str, what: str) -> Iterator[bytes]:
    """chunks, holding each back until the next has come, so a mismatch is raised before the last is given."""
    sha, held = _sha256(), None
    for chunk in chunks:
        sha.update(chunk)
        if held is not None:
            yield held
        held = chunk
    if f"sha256:{sha.hexdigest()}" != digest:
        raise RuntimeFailure(f"{what}: blob {digest} reads back as sha256:{sha.hexdigest()}; the store is damaged")
    if held is not None:
        yield held


@record
class Stored(Frozen):
    """One image the index knows: its manifest, config and the refs pointing at it (full names)."""

    manifest_digest: str
    manifest: dict
    config_digest: str
    config: dict
    refs: tuple[str, ...]

    @property
    def id(self) -> str:
        return self.config_digest

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config.get("rootfs", {}).get("diff_ids", []))


class ImageStore:
    """Files under root: blobs/sha256/<hex>, layers/<diff-id hex>/{diff,size}, index.json, locks/.

    Pulls and imports hold the store lock shared for their whole run and garbage collection holds it
    exclusively, so collection never removes what a running pull has written but not yet indexed.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.layers = root / "layers"
        self.locks = Locks(root / "locks")
        self.index_path = root / "index.json"
        for d in (root, self.blobs.parent, self.blobs, self.layers, self.locks.directory):
            private_dir(d)  # layers hold setuid binaries; an older orchestr made these 0755
        self._remove_leftovers()

    # -- blobs -----------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.blobs / hex_of(digest)

    def has_blob(self, digest: str) -> bool:
        """Stored as a file, or given back by a layer's files and tar-split (see add_layer_region)."""
        return self.blob_path(digest).is_file() or (self.layer_dir(digest) / SPLIT).is_file()

    def blob_size(self, digest: str) -> int:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            return self.layer_size(digest)  # a layer with a tar-split: its size is that of its tar

    def blob_chunks(self, digest: str, what: str) -> Iterator[bytes]:
        """The blob's content, checked against its digest before the last chunk is given."""
        path = self.blob_path(digest)
        if path.is_file():
            return _verified(_file_chunks(path), digest, what)
        from . import unpack

        split = self.layer_dir(digest) / SPLIT
        try:
            _, chunks = unpack.rebuild(self.layer_dir(digest) / "diff", split.read_bytes(), what)
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the native image store") from None
        return _verified(chunks, digest, what)

    def blob_writer(self, digest: str, what: str) -> BlobWriter:
        return BlobWriter(self.blob_path(digest), digest, what)

    def put_bytes(self, data: bytes, what: str, digest: str | None = None) -> str:
        """Store a small blob (manifest, config) held in memory; digest, when given, must match."""
        digest = digest or digest_of(data)
        if not self.has_blob(digest):
            writer = self.blob_writer(digest, what)
            writer.write(data)
            writer.commit()
        return digest

    def read_json(self, digest: str) -> dict:
        try:
            return json.loads(self.blob_path(digest).read_bytes())
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the native image store") from None

    @contextlib.asynccontextmanager
    async def using(self) -> AsyncIterator[None]:
        """Keep garbage collection away while blobs and layers are being added."""
        async with self.locks.hold("store", fcntl.LOCK_SH):
            yield

    async def ensure_blob(self, digest: str, what: str, fill: Callable[[BlobWriter], Awaitable[None]]) -> bool:
        """Make sure the blob is stored, calling fill to write it when absent; True when fill ran."""
        async with self.locks.hold(f"blob-{hex_of(digest)}"):
            if self.has_blob(digest):
                return False
            writer = self.blob_writer(digest, what)
            try:
                await fill(writer)
                await anyio.to_thread.run_sync(writer.commit)
            finally:
                writer.abort()
            return True

    # -- layers ----------------------------------------------------------------------
    def layer_dir(self, diff_id: str) -> Path:
        return self.layers / hex_of(diff_id)

    def has_layer(self, diff_id: str) -> bool:
        return (self.layer_dir(diff_id) / "diff").is_dir()

    def layer_size(self, diff_id: str) -> int:
        try:
            return int((self.layer_dir(diff_id) / "size").read_text())
        except (FileNotFoundError, ValueError):
            return 0

    async def ensure_layer(self, blob_digest: str, diff_id: str, what: str) -> bool:
        """Unpack the layer blob into layers/<diff-id> unless done already; True when this call unpacked it."""
        async with self.locks.hold(f"layer-{hex_of(diff_id)}"):
            if self.has_layer(diff_id):
                return False
            await anyio.to_thread.run_sync(self._unpack, self.blob_path(blob_digest), blob_digest, diff_id, what)
            return True

    async def add_layer(self, blob_digest: str, diff_id: str, what: str,
                        fill: Callable[[BlobWriter], Awaitable[None]]) -> None:
        """ensure_blob, then ensure_layer, in less time: the layer is unpacked from the blob's temp file while
        the blob is verified and synced, and is put in place only once the blob has been."""
        async with self.locks.hold(f"blob-{hex_of(blob_digest)}"):
            if self.has_blob(blob_digest):
                await self.ensure_layer(blob_digest, diff_id, what)
                return
            writer = self.blob_writer(blob_digest, what)
            try:
                await fill(writer)
                writer.file.flush()  # the unpacking below reads the temp file by its name
                async with self.locks.hold(f"layer-{hex_of(diff_id)}"):
                    if self.has_layer(diff_id):
                        await anyio.to_thread.run_sync(writer.commit)
                        return
                    layer: list[Path] = []

                    async def unpack() -> None:
                        layer.append(await anyio.to_thread.run_sync(
                            self._unpack, writer.tmp, blob_digest, diff_id, what, False))

                    async def check() -> None:
                        await anyio.to_thread.run_sync(writer.check)

                    async def sync() -> None:
                        await anyio.to_thread.run_sync(writer.sync)

                    try:
                        await _checked(unpack, check, sync)
                        writer.publish()
                        os.rename(layer[0], self.layer_dir(diff_id))
                    finally:
                        if layer and layer[0].exists():
                            shutil.rmtree(layer[0], ignore_errors=True)
            finally:
                writer.abort()

    async def add_layer_region(self, fd: int, offset: int, size: int, diff_id: str, what: str) -> bool:
        """Unpacks the uncompressed layer tar at [offset, offset + size) of fd (an image archive) into
        layers/<diff-id>, hashing exactly the bytes it unpacks, and keeps the layer's tar-split instead of a
        copy of the tar: the blob is then given back by the layer's files (half the writing, half the disk).
        A layer whose files cannot give it back gets its blob copied from the region and checked. A layer
        unpacked already (from a compressed blob) gets only the tar-split. False, with nothing changed, when
        this cannot be done (the layer is there already and its files cannot give the tar back, or the layer has
        sparse files): add_layer is for that."""
        from . import unpack

        async with self.locks.hold(f"blob-{hex_of(diff_id)}"), self.locks.hold(f"layer-{hex_of(diff_id)}"):
            if self.has_layer(diff_id):
                return self.has_blob(diff_id) or await self._split_for(fd, offset, size, diff_id, what)
            tmp = self._new_layer_dir(diff_id)
            try:
                try:
                    split = await anyio.to_thread.run_sync(unpack.unpack_region, fd, offset, size, diff_id,
                                                           tmp / "diff", what)
                except unpack.Unsplittable:
                    return False
                _write(tmp / "size", str(size).encode())
                if split is None:
                    await anyio.to_thread.run_sync(self._copy_blob, fd, offset, size, diff_id, what)
                else:
                    _write(tmp / SPLIT, split)
                os.rename(tmp, self.layer_dir(diff_id))
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        return True

    async def _split_for(self, fd: int, offset: int, size: int, diff_id: str, what: str) -> bool:
        """The layer diff_id is unpacked already (from a compressed blob) but its tar is not stored: keeps only a
        tar-split of the tar at [offset, offset + size) of fd beside the layer's files, which then give the tar
        back, rather than a second copy of the layer (an image pulled, then imported from `docker save`).
        The tar is unpacked once more, to a temp directory, for its split: only tars of diff_id's content count.
        False, with nothing changed, when the files cannot give it back."""
        from . import unpack

        tmp = self._new_layer_dir(diff_id)
        try:
            try:
                split = await anyio.to_thread.run_sync(unpack.unpack_region, fd, offset, size, diff_id,
                                                       tmp / "diff", what)
            except unpack.Unsplittable:
                return False
            if split is None:
                return False
            # the same diff-id, so the same files as the layer's: the split's references hold for them too
            _write(tmp / SPLIT, split)
            os.rename(tmp / SPLIT, self.layer_dir(diff_id) / SPLIT)
            if self.layer_size(diff_id) != size:
                _write(tmp / "size", str(size).encode())
                os.rename(tmp / "size", self.layer_dir(diff_id) / "size")
            return True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _copy_blob(self, fd: int, offset: int, size: int, digest: str, what: str) -> None:
        """Stores [offset, offset + size) of fd as the blob digest, checked (a file may change under us)."""
        writer = self.blob_writer(digest, what)
        try:
            writer.copy_range(fd, offset, size)
            writer.commit()
        finally:
            writer.abort()

    def _new_layer_dir(self, diff_id: str) -> Path:
        final = self.layer_dir(diff_id)
        tmp = final.with_name(f"{final.name}.tmp-{os.urandom(4).hex()}")
        tmp.mkdir(0o700)
        (tmp / "diff").mkdir()
        os.chmod(tmp / "diff", 0o755)  # the layer's root, as containers see it (whatever the umask)
        return tmp

    def _unpack(self, blob: Path, blob_digest: str, diff_id: str, what: str, publish: bool = True) -> Path:
        """Unpacks blob into a temp layer directory, renamed into place when publish is set; returns where it is."""
        final = self.layer_dir(diff_id)
        tmp = self._new_layer_dir(diff_id)
        try:
            from . import unpack  # tar handling loads only when a layer is unpacked

            size = unpack.unpack(blob, blob_digest, diff_id, tmp / "diff", what)
            _write(tmp / "size", str(size).encode())
            if publish:
                os.rename(tmp, final)  # a layer directory without a tmp suffix is always complete
                return final
            return tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _remove_leftovers(self) -> None:
        """Temp files and half-unpacked layers of a crashed process (one still working holds the lock)."""
        for directory, kind in ((self.blobs, "blob"), (self.layers, "layer")):
            for entry in os.scandir(directory):
                name, sep, _ = entry.name.partition(".tmp-")
                if not sep or not _HEX.fullmatch(name):
                    continue
                fd = try_flock(self.locks.path(f"{kind}-{name}"))
                if fd is None:
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                finally:
                    os.close(fd)

    # -- the reference index -----------------------------------------------------------
    def _read_index(self) -> dict:
        try:
            index = json.loads(self.index_path.read_bytes())
        except FileNotFoundError:
            index = {}
        index.setdefault("refs", {})
        index.setdefault("manifests", [])
        return index

    def _update_index(self, change: Callable[[dict], None]) -> None:
        with flocked(self.locks.path("index")):
            index = self._read_index()
            change(index)
            tmp = self.index_path.with_name(f"index.json.tmp-{os.urandom(4).hex()}")
            with open(tmp, "w", opener=private) as f:
                json.dump(index, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, self.index_path)

    def record(self, manifest_digest: str, refs: list[str]) -> None:
        """Index a stored image under refs (full names); a tag moved off another image leaves that one untagged."""

        def change(index: dict) -> None:
            if manifest_digest not in index["manifests"]:
                index["manifests"].append(manifest_digest)
            for ref in refs:
                index["refs"][ref] = manifest_digest

        self._update_index(change)

    def _stored(self, manifest_digest: str, refs: tuple[str, ...]) -> Stored:
        manifest = self.read_json(manifest_digest)
        config_digest = manifest["config"]["digest"]
        return Stored(manifest_digest, manifest, config_digest, self.read_json(config_digest), refs)

    def get(self, manifest_digest: str) -> Stored:
        """The stored image of one manifest, with the refs pointing at it."""
        refs = sorted(r for r, m in self._read_index()["refs"].items() if m == manifest_digest)
        return self._stored(manifest_digest, tuple(refs))

    def all(self) -> list[Stored]:
        index = self._read_index()
        by_manifest: dict[str, list[str]] = {m: [] for m in index["manifests"]}
        for ref, digest in sorted(index["refs"].items()):
            by_manifest.setdefault(digest, []).append(ref)
        return [self._stored(m, tuple(refs)) for m, refs in by_manifest.items()]

    def lookup(self, ref: str) -> list[Stored]:
        """Every stored manifest of the image ref names (a name, a name@digest, an image id or its prefix)."""
        stored = self.all()
        found: str | None = None
        if not ref.startswith("sha256:"):
            parsed = parse(ref)
            found = self._read_index()["refs"].get(parsed.with_digest(parsed.digest) if parsed.digest else str(parsed))
        if found is not None:
            ids = {s.id for s in stored if s.manifest_digest == found}
        else:
            m = _ID_PREFIX.fullmatch(ref)
            ids = {s.id for s in stored if hex_of(s.id).startswith(m.group(1))} if m else set()
        if len(ids) != 1:
            raise NotFound(f"image {ref!r} {'is ambiguous' if ids else 'is not in the native image store'}")
        image_id = ids.pop()
        return [s for s in stored if s.id == image_id]

    def resolve(self, ref: str) -> str:
        """The image id (sha256 of its config) that ref names; NotFound when absent."""
        return self.lookup(ref)[0].id

    def image_config(self, ref: str) -> dict:
        return self.lookup(ref)[0].config

    def layer_paths(self, ref: str) -> list[Path]:
        """The unpacked layer directories of the image, bottom layer first, ready as overlayfs lowerdirs."""
        stored = self.lookup(ref)[0]
        paths: list[Path] = []
        for diff_id in stored.diff_ids:
            path = self.layer_dir(diff_id) / "diff"
            if not path.is_dir():
                raise NotFound(f"image {ref!r}: layer {diff_id} is not unpacked; pull or import the image again")
            if path in paths:
                # overlayfs refuses a lowerdir given twice; an empty layer repeated changes nothing
                if next(os.scandir(path), None) is None:
                    continue
                raise RuntimeFailure(f"image {ref!r}: layer {diff_id} appears twice with content; not supported")
            paths.append(path)
        return paths

    def forget(self, manifests: set[str], refs: set[str], keep_manifests: bool = False) -> None:
        """Drop refs, and unless keep_manifests, the manifests from the index (their content stays until gc)."""

        def change(index: dict) -> None:
            for ref in refs:
                index["refs"].pop(ref, None)
            if not keep_manifests:
                index["manifests"] = [m for m in index["manifests"] if m not in manifests]
                index["refs"] = {r: m for r, m in index["refs"].items() if m not in manifests}

        self._update_index(change)

    # -- garbage collection -------------------------------------------------------------
    def gc(self, drop_untagged_except: set[str] | None = None) -> list[str]:
        """Delete blobs and layers no indexed image needs; when drop_untagged_except is given, first
        drop untagged images whose id is not in it. Returns what went, as 'image|blob|layer sha256:...'."""
        removed: list[str] = []
        with flocked(self.locks.path("store")):
            if drop_untagged_except is not None:
                untagged = {s.manifest_digest: s.id for s in self.all() if not s.refs}
                drop = {m for m, i in untagged.items() if i not in drop_untagged_except}
                if drop:
                    self.forget(drop, set())
                    removed += sorted({f"image {untagged[m]}" for m in drop})
            keep_blobs = {hex_of(ref.rpartition("@")[2]) for ref in self._read_index()["refs"] if "@" in ref}
            keep_layers: set[str] = set()
            for s in self.all():
                keep_blobs |= {hex_of(s.manifest_digest), hex_of(s.config_digest)}
                keep_blobs |= {hex_of(layer["digest"]) for layer in s.manifest["layers"]}
                keep_layers |= {hex_of(d) for d in s.diff_ids}
            for directory, keep, kind in ((self.blobs, keep_blobs, "blob"), (self.layers, keep_layers, "layer")):
                for entry in sorted(os.scandir(directory), key=lambda e: e.name):
                    if entry.name in keep:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                    name = entry.name.partition(".tmp-")[0]
                    if _HEX.fullmatch(entry.name):
                        removed.append(f"{kind} sha256:{name}")
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.locks.path(f"{kind}-{name}"))
        return removed


def manifest_layers(manifest: dict, config: dict, what: str) -> list[tuple[str, str]]:
    """(blob digest, diff-id) per layer, bottom first, checking the manifest and config agree."""
    layers = manifest["layers"]
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    if len(layers) != len(diff_ids):
        raise RuntimeFailure(f"{what}: manifest lists {len(layers)} layers but the config {len(diff_ids)} diff-ids")
    return [(layer["digest"], diff_id) for layer, diff_id in zip(layers, diff_ids, strict=True)]

