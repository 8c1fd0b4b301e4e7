"""Importing `docker save` archives and OCI image-layout tarballs, and exporting an image as an OCI layout."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import posixpath
import secrets
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import anyio

from orchestr.errors import NotFound, RuntimeFailure
from orchestr.model import PullProgress, PullStatus
from orchestr.registry import media, platform
from orchestr.registry.reference import parse
from orchestr.runtime import ProgressCallback

from . import unpack
from .store import BlobWriter, ImageStore, Stored, digest_of, hex_of, manifest_layers
from .tasks import run_all

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
CHUNK = 1 << 20


class _Archive:
    """Random access to the members of an uncompressed tarball, held to a layer's limits on entries and headers."""

    def __init__(self, f: BinaryIO, what: str) -> None:
        self.file, self.what = f, what
        limits = unpack.Limits.from_env()
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            with unpack.open_tar(f, "r:", what, limits) as tar:
                while (m := tar.next()) is not None:
                    tar.members.clear()
                    self.members[posixpath.normpath(m.name.lstrip("/"))] = m
                    if len(self.members) > limits.entries:
                        raise limits.refuse(what, "entries", "the archive")
        except (tarfile.TarError, ValueError) as e:
            raise RuntimeFailure(f"{what}: not a tar archive: {e}") from None

    def member(self, name: str) -> tarfile.TarInfo:
        name = posixpath.normpath(name.lstrip("/"))
        for _ in range(16):  # docker save writes repeated layers as links to the first copy
            m = self.members.get(name)
            if m is None:
                raise RuntimeFailure(f"{self.what}: the archive has no {name!r}")
            if m.issym():
                name = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname))
            elif m.islnk():
                name = posixpath.normpath(m.linkname.lstrip("/"))
            elif m.isreg():
                return m
            else:
                raise RuntimeFailure(f"{self.what}: {name!r} in the archive is not a file")
        raise RuntimeFailure(f"{self.what}: {name!r} in the archive is a link loop")

    def has(self, name: str) -> bool:
        return posixpath.normpath(name) in self.members

    def chunks(self, name: str) -> Iterator[bytes]:
        m = self.member(name)
        fd, offset, left = self.file.fileno(), m.offset_data, m.size
        while left:
            data = os.pread(fd, min(CHUNK, left), offset)
            if not data:
                raise RuntimeFailure(f"{self.what}: {name!r} is truncated")
            offset, left = offset + len(data), left - len(data)
            yield data

    def read(self, name: str, limit: int = 16 << 20) -> bytes:
        if self.member(name).size > limit:
            raise RuntimeFailure(f"{self.what}: {name!r} is larger than {limit} bytes")
        return b"".join(self.chunks(name))

    def json(self, name: str, raw: bytes | None = None) -> dict | list:
        try:
            return json.loads(self.read(name) if raw is None else raw)
        except ValueError:
            raise RuntimeFailure(f"{self.what}: {name!r} is not JSON") from None


async def import_archive(store: ImageStore, path: Path, progress: ProgressCallback | None = None) -> list[Stored]:
    what = str(path)
    if not path.is_file():
        raise NotFound(f"{path}: no such archive")
    async with store.using():
        with contextlib.ExitStack() as stack:
            f = stack.enter_context(open(path, "rb"))
            kind = unpack.compression(f.read(4))
            f.seek(0)
            if kind is not None:  # a compressed archive is inflated into an unnamed temp file, for random access
                tmp = stack.enter_context(tempfile.TemporaryFile(dir=store.root))
                await anyio.to_thread.run_sync(_inflate, f, kind, tmp, what)
                f = tmp
            archive = await anyio.to_thread.run_sync(_Archive, f, what)
            if archive.has("oci-layout") and archive.has("index.json"):
                return await _import_oci(store, archive, progress)
            if archive.has("manifest.json"):
                return await _import_docker(store, archive, progress)
            raise RuntimeFailure(f"{what}: neither a docker-archive (manifest.json) nor an OCI layout (index.json)")


def _inflate(src: BinaryIO, kind: str, dst: BinaryIO, what: str) -> None:
    """The archive inflated, as large as a layer may be: a small .tar.gz must not fill the disk."""
    limits = unpack.Limits.from_env()
    try:
        reader = unpack.decompressor(src, kind, what)
        while data := reader.read(CHUNK):
            dst.write(data)
            if dst.tell() > limits.size:
                raise limits.refuse(what, "size", "the archive")
    except (EOFError, zlib.error, OSError) as e:
        raise RuntimeFailure(f"{what}: corrupt {kind} archive: {e}") from None
    dst.flush()
    dst.seek(0)


async def _copy_blob(archive: _Archive, name: str, writer: BlobWriter, inflate: bool = False,
                     moved: Callable[[int], None] | None = None) -> None:
    """Copy a member into writer, inflated with inflate; moved hears of the bytes read so far, in the event loop."""

    def copy() -> None:
        m = archive.member(name)
        head = os.pread(archive.file.fileno(), 4, m.offset_data)
        kind = unpack.compression(head) if inflate else None
        if kind is None:  # as it is: copied in the kernel, hashed once from the copy
            if writer.copy_range(archive.file.fileno(), m.offset_data, m.size) != m.size:
                raise RuntimeFailure(f"{archive.what}: {name!r} is truncated")
            return
        read = 0

        def counted() -> Iterator[bytes]:
            nonlocal read
            for chunk in archive.chunks(name):
                read += len(chunk)
                yield chunk

        chunks = counted()
        first = next(chunks, b"")
        src = unpack.decompressor(_ChunkReader(first, chunks), kind, archive.what)
        limits = unpack.Limits.from_env()
        try:
            while data := src.read(CHUNK):
                writer.write(data)
                if writer.size > limits.size:
                    raise limits.refuse(archive.what, "size")
                if moved:
                    anyio.from_thread.run_sync(moved, read)
        except (EOFError, zlib.error, OSError) as e:
            raise RuntimeFailure(f"{archive.what}: {name!r} is a corrupt {kind} stream: {e}") from None

    await anyio.to_thread.run_sync(copy)


class _ChunkReader(io.RawIOBase):
    """A file-like view of an iterator of byte chunks, for the decompressors."""

    def __init__(self, first: bytes, rest: Iterator[bytes]) -> None:
        self._buf, self._pos, self._rest = memoryview(first), 0, rest

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        if self._pos == len(self._buf):
            self._buf, self._pos = memoryview(next(self._rest, b"")), 0
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = self._buf[self._pos:self._pos + n]
        self._pos += n
        return n


def _reporter(progress: ProgressCallback | None, ref: str):  # type: ignore[no-untyped-def]
    def report(layer: str | None, status: PullStatus, current: int = 0, total: int | None = None) -> None:
        if progress:
            progress(PullProgress(ref, layer, status, current, total))

    return report


async def _layers(store: ImageStore, archive: _Archive, items: list[tuple[str, str, str]], report, what: str) -> None:
    """Store and unpack (archive member, blob digest, diff-id) triples, in parallel."""

    async def one(name: str, blob: str, diff_id: str) -> None:
        size = archive.member(name).size  # the bytes read from the archive, which progress counts
        if store.has_blob(blob) and store.has_layer(diff_id):
            report(blob, PullStatus.EXISTS, size, size)
            return
        report(blob, PullStatus.WAITING, 0, size)
        if blob == diff_id:  # an uncompressed tar (or one compressed inside a docker-archive)
            m = archive.member(name)
            if unpack.compression(os.pread(archive.file.fileno(), 4, m.offset_data)) is None:
                report(blob, PullStatus.EXTRACTING, 0, size)
                if await store.add_layer_region(archive.file.fileno(), m.offset_data, m.size, diff_id, what):
                    report(blob, PullStatus.DONE, size, size)
                    return
        inflate = blob == diff_id  # docker-archive layers are stored uncompressed, whatever the archive holds

        async def fill(writer: BlobWriter) -> None:
            report(blob, PullStatus.LOADING, 0, size)
            await _copy_blob(archive, name, writer, inflate, lambda n: report(blob, PullStatus.LOADING, n, size))
            report(blob, PullStatus.EXTRACTING, size, size)

        await store.add_layer(blob, diff_id, what, fill)
        report(blob, PullStatus.DONE, size, size)

    await run_all(functools.partial(one, name, blob, diff_id) for name, blob, diff_id in items)


async def _import_docker(store: ImageStore, archive: _Archive, progress: ProgressCallback | None) -> list[Stored]:
    entries = archive.json("manifest.json")
    if not isinstance(entries, list):
        raise RuntimeFailure(f"{archive.what}: manifest.json is not a list")
    imported = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise RuntimeFailure(f"{archive.what}: manifest.json entries need a Config file name")
        tags = [str(parse(t)) for t in entry.get("RepoTags") or []]
        what = f"{archive.what} ({', '.join(tags) or entry['Config']})"
        report = _reporter(progress, tags[0] if tags else archive.what)
        config_raw = archive.read(entry["Config"])
        config = archive.json(entry["Config"], config_raw)
        config_digest = store.put_bytes(config_raw, what)
        diff_ids = config.get("rootfs", {}).get("diff_ids", []) if isinstance(config, dict) else []
        layer_files = entry.get("Layers") or []
        if len(diff_ids) != len(layer_files):
            raise RuntimeFailure(f"{what}: {len(layer_files)} layers but the config has {len(diff_ids)} diff-ids")
        await _layers(store, archive, [(n, d, d) for n, d in zip(layer_files, diff_ids, strict=True)], report, what)
        # a manifest made the same way every time, so import, export and import again keeps its digest
        manifest = {
            "schemaVersion": 2,
            "mediaType": media.OCI_MANIFEST,
            "config": {"mediaType": media.OCI_CONFIG, "digest": config_digest, "size": len(config_raw)},
            "layers": [
                {"mediaType": media.OCI_LAYER, "digest": d, "size": store.blob_size(d)}
                for d in diff_ids
            ],
        }
        manifest_digest = store.put_bytes(json.dumps(manifest, separators=(",", ":")).encode(), what)
        store.record(manifest_digest, tags)
        report(None, PullStatus.DONE)
        imported.append(store.get(manifest_digest))
    return imported


async def _import_oci(store: ImageStore, archive: _Archive, progress: ProgressCallback | None) -> list[Stored]:
    index = archive.json("index.json")
    if not isinstance(index, dict):
        raise RuntimeFailure(f"{archive.what}: index.json is not an object")
    imported, skipped = [], []
    for desc in index.get("manifests") or []:
        annotations = desc.get("annotations") or {}
        name = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME) or ""
        tags = [str(parse(name))] if ("/" in name or ":" in name) else []
        what = f"{archive.what} ({tags[0] if tags else desc.get('digest')})"
        if desc.get("platform") and desc["platform"].get("architecture") != platform.host().architecture:
            skipped.append(desc)
            continue
        raw = _oci_blob(archive, desc["digest"], what)
        doc = archive.json(desc["digest"], raw)
        if media.kind(doc, desc.get("mediaType"), what) == "index":
            desc = platform.select(doc.get("manifests") or [], what)
            raw = _oci_blob(archive, desc["digest"], what)
            doc = archive.json(desc["digest"], raw)
            if media.kind(doc, desc.get("mediaType"), what) != "manifest":
                raise RuntimeFailure(f"{what}: nested indexes are not supported")
        report = _reporter(progress, tags[0] if tags else archive.what)
        config_digest = doc["config"]["digest"]
        store.put_bytes(_oci_blob(archive, config_digest, what), what, config_digest)
        config = store.read_json(config_digest)
        layers = manifest_layers(doc, config, what)
        await _layers(store, archive, [(f"blobs/sha256/{hex_of(b)}", b, d) for b, d in layers], report, what)
        manifest_digest = store.put_bytes(raw, what, desc["digest"])
        store.record(manifest_digest, tags)
        report(None, PullStatus.DONE)
        imported.append(store.get(manifest_digest))
    if skipped and not imported:
        platform.select(skipped, archive.what)  # raises, naming the platforms the layout has
    return imported


def _oci_blob(archive: _Archive, digest: str, what: str) -> bytes:
    raw = archive.read(f"blobs/sha256/{hex_of(digest)}")
    if digest_of(raw) != digest:
        raise RuntimeFailure(f"{what}: blob {digest} in the archive has content {digest_of(raw)}; refused")
    return raw


def export_layout(store: ImageStore, stored: Stored, ref: str | None, path: Path) -> None:
    """Write stored as an OCI image-layout tarball at path: index.json names it ref, blobs as stored."""
    raw = store.blob_path(stored.manifest_digest).read_bytes()
    descriptor: dict = {
        "mediaType": stored.manifest.get("mediaType") or media.OCI_MANIFEST,
        "digest": stored.manifest_digest,
        "size": len(raw),
    }
    if ref:
        descriptor["annotations"] = {CONTAINERD_NAME: ref, REF_NAME: ref}
    index = {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": [descriptor]}
    blobs = [stored.manifest_digest, stored.config_digest]
    blobs += [layer["digest"] for layer in stored.manifest["layers"] if layer["digest"] not in blobs]
    tmp = path.with_name(f"{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK) as tar:
            _add_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
            _add_bytes(tar, "index.json", json.dumps(index, separators=(",", ":")).encode())
            tar.addfile(_info("blobs", tarfile.DIRTYPE, 0o755))
            tar.addfile(_info("blobs/sha256", tarfile.DIRTYPE, 0o755))
            for digest in blobs:
                info = _info(f"blobs/sha256/{hex_of(digest)}", tarfile.REGTYPE, 0o644)
                info.size = store.blob_size(digest)
                chunks = store.blob_chunks(digest, str(path))
                tar.addfile(info, io.BufferedReader(_ChunkReader(next(chunks, b""), chunks), CHUNK))  # whole reads
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _info(name: str, type_: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = type_, mode, 0
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = _info(name, tarfile.REGTYPE, 0o644)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
