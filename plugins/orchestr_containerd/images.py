"""Images in containerd's own store, as containerd's clients keep them: blobs in the content store with the
garbage collector's reference labels, image records naming their manifests, layers unpacked through the diff
service into the overlayfs snapshotter under their chain ids, all under a lease while the work goes on."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from orchestr.containers import rfc3339
from orchestr.errors import Conflict, NotFound, RuntimeFailure, TerminalFailure
from orchestr.model import HistoryEntry, Image, PullProgress, PullStatus
from orchestr.plain import Frozen, record
from orchestr.registry import media, platform
from orchestr.registry.reference import familiar, parse
from orchestr.runtime import ProgressCallback

from .client import RUNTIME, Connection, code
from .proto import content_pb2, diff_pb2, images_pb2, leases_pb2, snapshots_pb2, types_pb2

if TYPE_CHECKING:
    import tarfile

    import anyio
    import grpc
else:
    from . import lazy

    anyio, grpc = lazy.module("anyio"), lazy.module("grpc")  # not for a one-off run (oneoff.py)

SNAPSHOTTER = "overlayfs"
CHUNK = 1 << 20
BLOB_CACHE_ITEM, BLOB_CACHE_ITEMS = 1 << 20, 256  # the largest blob kept once read, and how many
LEASE_EXPIRY = 3600  # seconds: a lease an import left behind (killed) expires, and what it held is collected
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
GC_CONFIG = "containerd.io/gc.ref.content.config"
GC_LAYER = "containerd.io/gc.ref.content.l.{}"
GC_MANIFEST = "containerd.io/gc.ref.content.m.{}"
GC_SNAPSHOT = f"containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The chain id of each layer: the snapshot's name, which names the layers beneath it too."""
    chains: list[str] = []
    for diff_id in diff_ids:
        chains.append(diff_id if not chains else sha256(f"{chains[-1]} {diff_id}".encode()))
    return chains


@record
class Resolved(Frozen):
    """An image record read through: its manifest, config, and the chain id of its top layer."""

    name: str
    manifest_digest: str
    manifest: dict
    config_digest: str
    config: dict
    created_at: str | None

    @property
    def chain(self) -> str | None:
        chains = chain_ids(list((self.config.get("rootfs") or {}).get("diff_ids") or []))
        return chains[-1] if chains else None

    @property
    def size(self) -> int:
        return sum(int(d.get("size") or 0) for d in self.manifest.get("layers") or [])


class Images:
    """The image verbs; mixed into the runtime, whose conn (Connection) they use."""

    conn: Connection
    _unpack_lock: anyio.Lock | None = None

    # -- the content store --------------------------------------------------------------------------------------
    async def read_blob(self, digest: str, what: str) -> bytes:
        """A blob of the content store; manifests and configs are kept once read (their digest names them)."""
        cache = self.__dict__.setdefault("_blobs", {})
        if digest in cache:
            return cache[digest]
        data = bytearray()
        with self.conn.errors(what, missing=f"{what}: blob {digest} is not in containerd's content store"):
            async for part in self.conn.content.Read(content_pb2.ReadContentRequest(digest=digest),
                                                     metadata=self.conn.metadata):
                data += part.data
        if len(data) <= BLOB_CACHE_ITEM and len(cache) < BLOB_CACHE_ITEMS:
            cache[digest] = bytes(data)
        return bytes(data)

    async def has_blob(self, digest: str) -> bool:
        try:
            await self.conn.content.Info(content_pb2.InfoRequest(digest=digest), metadata=self.conn.metadata)
            return True
        except grpc.RpcError as e:
            if code(e) == grpc.StatusCode.NOT_FOUND:
                return False
            raise self.conn.translate(e, f"blob {digest}") from None

    async def write_blob(self, lease: str, digest: str, size: int, chunks: AsyncIterator[bytes] | bytes,
                         labels: dict[str, str] | None = None) -> None:
        """Writes a blob unless the store has it, then sets labels on it (the store checks the digest)."""
        labels = labels or {}
        metadata = self.conn.leased(lease)
        if await self.has_blob(digest):
            if labels:
                with self.conn.errors(f"blob {digest}"):
                    await self.conn.content.Update(content_pb2.UpdateRequest(
                        info=content_pb2.Info(digest=digest, labels=labels),
                        update_mask={"paths": [f"labels.{k}" for k in labels]}), metadata=metadata)
            return
        ref = f"orchestr-{digest}-{os.urandom(4).hex()}"

        async def requests() -> AsyncIterator[content_pb2.WriteContentRequest]:
            offset = 0
            if isinstance(chunks, bytes):
                pieces = [chunks[i:i + CHUNK] for i in range(0, len(chunks), CHUNK)] or [b""]
                for piece in pieces:
                    yield content_pb2.WriteContentRequest(action=content_pb2.WRITE, ref=ref, total=size,
                                                          expected=digest, offset=offset, data=piece)
                    offset += len(piece)
            else:
                async for piece in chunks:
                    yield content_pb2.WriteContentRequest(action=content_pb2.WRITE, ref=ref, total=size,
                                                          expected=digest, offset=offset, data=piece)
                    offset += len(piece)
            yield content_pb2.WriteContentRequest(action=content_pb2.COMMIT, ref=ref, total=size, expected=digest,
                                                  offset=offset, labels=labels)

        try:
            async for _ in self.conn.content.Write(requests(), metadata=metadata):
                pass
        except grpc.RpcError as e:
            if code(e) != grpc.StatusCode.ALREADY_EXISTS:
                with contextlib.suppress(grpc.RpcError):
                    await self.conn.content.Abort(content_pb2.AbortRequest(ref=ref), metadata=self.conn.metadata)
                raise self.conn.translate(e, f"writing blob {digest}") from None

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[str]:
        """A lease that keeps what is written under it from the garbage collector until the work is recorded."""
        id = f"orchestr-{os.urandom(8).hex()}"
        expire = rfc3339((time.time_ns() // 1_000_000_000 + LEASE_EXPIRY) * 1_000_000_000)
        with self.conn.errors("a lease"):
            await self.conn.leases.Create(leases_pb2.CreateRequest(id=id, labels={"containerd.io/gc.expire": expire}),
                                          metadata=self.conn.metadata)
        try:
            yield id
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(grpc.RpcError):
                await self.conn.leases.Delete(leases_pb2.DeleteRequest(id=id), metadata=self.conn.metadata)

    # -- records --------------------------------------------------------------------------------------------------
    async def _record(self, name: str, target: types_pb2.Descriptor) -> None:
        image = images_pb2.Image(name=name, target=target)
        try:
            await self.conn.images.Create(images_pb2.CreateImageRequest(image=image), metadata=self.conn.metadata)
        except grpc.RpcError as e:
            if code(e) != grpc.StatusCode.ALREADY_EXISTS:
                raise self.conn.translate(e, f"image {name}") from None
            with self.conn.errors(f"image {name}"):
                await self.conn.images.Update(images_pb2.UpdateImageRequest(
                    image=image, update_mask={"paths": ["target"]}), metadata=self.conn.metadata)

    async def _records(self) -> list[images_pb2.Image]:
        with self.conn.errors("the image list"):
            return list((await self.conn.images.List(images_pb2.ListImagesRequest(),
                                                     metadata=self.conn.metadata)).images)

    async def _get_record(self, ref: str) -> images_pb2.Image:
        name = str(parse(ref))
        with self.conn.errors(f"image {ref}", missing=f"image {ref} not found in containerd"):
            return (await self.conn.images.Get(images_pb2.GetImageRequest(name=name),
                                               metadata=self.conn.metadata)).image

    async def resolve(self, record: images_pb2.Image) -> Resolved:
        what = f"image {record.name}"
        digest = record.target.digest
        doc = json.loads(await self.read_blob(digest, what))
        if record.target.media_type in media.INDEXES or "manifests" in doc:
            chosen = platform.select(doc.get("manifests") or [], what)
            digest = chosen["digest"]
            doc = json.loads(await self.read_blob(digest, what))
        config_digest = doc["config"]["digest"]
        config = json.loads(await self.read_blob(config_digest, what))
        created = record.created_at.ToJsonString() if record.HasField("created_at") else None
        return Resolved(record.name, digest, doc, config_digest, config, created)

    async def image_config(self, ref: str) -> Resolved:
        return await self.resolve(await self._get_record(ref))

    # -- unpacking ------------------------------------------------------------------------------------------------
    async def unpack(self, lease: str, resolved: Resolved, progress: ProgressCallback | None = None,
                     ref: str | None = None) -> None:
        """Applies each layer not yet in the snapshotter onto the one beneath it, and labels the config with the
        top snapshot so the garbage collector keeps it while the image lives. Progress names the image ref (by
        default its name)."""

        def report(layer: dict, status: PullStatus) -> None:
            if progress:
                size = int(layer.get("size") or 0)
                progress(PullProgress(ref or resolved.name, layer["digest"], status, size, size))

        if self._unpack_lock is None:
            self._unpack_lock = anyio.Lock()
        metadata = self.conn.leased(lease)
        layers = resolved.manifest.get("layers") or []
        diff_ids = list((resolved.config.get("rootfs") or {}).get("diff_ids") or [])
        if len(layers) != len(diff_ids):
            raise TerminalFailure(f"image {resolved.name}: {len(layers)} layers but {len(diff_ids)} diff ids",
                                  runtime=RUNTIME)
        chains = chain_ids(diff_ids)
        async with self._unpack_lock:
            for i, (layer, chain) in enumerate(zip(layers, chains, strict=True)):
                if await self._has_snapshot(chain):
                    report(layer, PullStatus.EXISTS)
                    continue
                report(layer, PullStatus.EXTRACTING)
                key = f"orchestr-extract-{os.urandom(6).hex()} {chain}"
                parent = chains[i - 1] if i else ""
                with self.conn.errors(f"unpacking layer {layer['digest']} of {resolved.name}"):
                    mounts = (await self.conn.snapshots.Prepare(snapshots_pb2.PrepareSnapshotRequest(
                        snapshotter=SNAPSHOTTER, key=key, parent=parent), metadata=metadata)).mounts
                    try:
                        desc = types_pb2.Descriptor(media_type=layer.get("mediaType") or DOCKER_LAYER,
                                                    digest=layer["digest"], size=int(layer.get("size") or 0))
                        applied = await self.conn.diff.Apply(diff_pb2.ApplyRequest(diff=desc, mounts=mounts),
                                                             metadata=metadata, timeout=3600)
                        if applied.applied.digest != diff_ids[i]:
                            raise RuntimeFailure(f"image {resolved.name}: layer {layer['digest']} unpacks to "
                                                 f"{applied.applied.digest}, its config says {diff_ids[i]}",
                                                 runtime=RUNTIME)
                        await self.conn.snapshots.Commit(snapshots_pb2.CommitSnapshotRequest(
                            snapshotter=SNAPSHOTTER, name=chain, key=key), metadata=metadata)
                    except BaseException:
                        with anyio.CancelScope(shield=True), contextlib.suppress(grpc.RpcError):
                            await self.conn.snapshots.Remove(snapshots_pb2.RemoveSnapshotRequest(
                                snapshotter=SNAPSHOTTER, key=key), metadata=self.conn.metadata)
                        raise
                report(layer, PullStatus.DONE)
        if chains:
            with self.conn.errors(f"image {resolved.name}"):
                await self.conn.content.Update(content_pb2.UpdateRequest(
                    info=content_pb2.Info(digest=resolved.config_digest, labels={GC_SNAPSHOT: chains[-1]}),
                    update_mask={"paths": [f"labels.{GC_SNAPSHOT}"]}), metadata=metadata)

    async def _has_snapshot(self, key: str) -> bool:
        try:
            await self.conn.snapshots.Stat(snapshots_pb2.StatSnapshotRequest(snapshotter=SNAPSHOTTER, key=key),
                                           metadata=self.conn.metadata)
            return True
        except grpc.RpcError as e:
            if code(e) == grpc.StatusCode.NOT_FOUND:
                return False
            raise self.conn.translate(e, f"snapshot {key}") from None

    # -- the verbs ------------------------------------------------------------------------------------------------
    async def ensure_image(self, ref: str, progress: ProgressCallback | None = None) -> Image:
        try:
            resolved = await self.image_config(ref)
        except NotFound:
            return await self.pull(ref, progress)
        if resolved.chain and not await self._has_snapshot(resolved.chain):
            async with self.lease() as lease:
                await self.unpack(lease, resolved, progress, ref)
            if progress:
                progress(PullProgress(ref, None, PullStatus.DONE))
        return self._image(resolved, [resolved.name])

    async def import_image(self, path: Path, progress: ProgressCallback | None = None) -> list[Image]:
        import tarfile  # here: a one-off run imports this module, and no archive

        path = Path(path)
        try:
            archive = tarfile.open(path)
        except (OSError, tarfile.TarError) as e:
            raise TerminalFailure(f"{path}: not an image archive: {e}", runtime=RUNTIME) from None
        with archive:
            names = set(archive.getnames())
            ref = str(path)  # progress names the archive, as the docker engine's load does

            def loading(layer: str, current: int, total: int) -> None:
                if progress:
                    progress(PullProgress(ref, layer, PullStatus.LOADING, current, total))

            async with self.lease() as lease:
                if "manifest.json" in names:
                    records = await self._import_docker(archive, path, lease, loading)
                elif "index.json" in names:
                    records = await self._import_oci(archive, path, lease, loading)
                else:
                    raise TerminalFailure(f"{path}: neither a `docker save` archive (manifest.json) nor an OCI "
                                          "image layout (index.json)", runtime=RUNTIME)
                out: list[Image] = []
                unpacked: set[str] = set()
                for name, target in records:
                    await self._record(name, target)
                    resolved = await self.resolve(images_pb2.Image(name=name, target=target))
                    if target.digest not in unpacked:  # an image of several tags once
                        unpacked.add(target.digest)
                        await self.unpack(lease, resolved, progress, ref)
                    out.append(resolved)
                if progress:
                    progress(PullProgress(ref, None, PullStatus.DONE))
        by_id: dict[str, tuple[Resolved, list[str]]] = {}
        for resolved in out:
            by_id.setdefault(resolved.config_digest, (resolved, []))[1].append(resolved.name)
        return [self._image(r, names) for r, names in by_id.values()]

    async def _write_member(self, archive: tarfile.TarFile, member: str, lease: str, what: str,
                            labels: dict[str, str] | None = None,
                            loading: Callable[[str, int, int], None] | None = None) -> tuple[str, int, str]:
        """Writes a member of the archive as a blob, telling loading (digest, bytes so far, size) as it goes;
        returns (digest, size, media type of a layer)."""
        info = archive.getmember(member)
        file = archive.extractfile(info)
        if file is None:
            raise TerminalFailure(f"{what}: {member} is not a file", runtime=RUNTIME)
        hasher = hashlib.sha256()
        while chunk := await anyio.to_thread.run_sync(file.read, CHUNK):
            hasher.update(chunk)
        digest = "sha256:" + hasher.hexdigest()
        file.seek(0)
        head = file.read(2)
        file.seek(0)

        async def chunks() -> AsyncIterator[bytes]:
            sent = 0
            if loading:
                loading(digest, 0, info.size)
            while chunk := await anyio.to_thread.run_sync(file.read, CHUNK):
                yield chunk
                sent += len(chunk)
                if loading:
                    loading(digest, sent, info.size)

        await self.write_blob(lease, digest, info.size, chunks(), labels)
        return digest, info.size, DOCKER_LAYER_GZIP if head == b"\x1f\x8b" else DOCKER_LAYER

    async def _import_docker(self, archive: tarfile.TarFile, path: Path, lease: str,
                             loading: Callable[[str, int, int], None]) -> list[tuple[str, types_pb2.Descriptor]]:
        what = str(path)
        try:
            entries = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
        except (ValueError, KeyError, AttributeError) as e:
            raise TerminalFailure(f"{path}: manifest.json is not readable: {e}", runtime=RUNTIME) from None
        records = []
        for entry in entries:
            layers = []
            for member in entry.get("Layers") or []:
                digest, size, media_type = await self._write_member(archive, member, lease, what, loading=loading)
                layers.append({"mediaType": media_type, "digest": digest, "size": size})
            config_digest, config_size, _ = await self._write_member(archive, entry["Config"], lease, what)
            manifest = {"schemaVersion": 2, "mediaType": media.DOCKER_MANIFEST,
                        "config": {"mediaType": media.DOCKER_CONFIG, "digest": config_digest, "size": config_size},
                        "layers": layers}
            raw = json.dumps(manifest, separators=(",", ":")).encode()
            labels = {GC_CONFIG: config_digest, **{GC_LAYER.format(i): l["digest"] for i, l in enumerate(layers)}}
            digest = sha256(raw)
            await self.write_blob(lease, digest, len(raw), raw, labels)
            target = types_pb2.Descriptor(media_type=media.DOCKER_MANIFEST, digest=digest, size=len(raw))
            tags = entry.get("RepoTags") or []
            if not tags:
                tags = [f"import-{config_digest.removeprefix('sha256:')[:12]}:latest"]
            records += [(str(parse(tag)), target) for tag in tags]
        return records

    async def _import_oci(self, archive: tarfile.TarFile, path: Path, lease: str,
                          loading: Callable[[str, int, int], None]) -> list[tuple[str, types_pb2.Descriptor]]:
        what = str(path)

        def member(digest: str) -> str:
            algorithm, _, hex = digest.partition(":")
            return f"blobs/{algorithm}/{hex}"

        async def blob(digest: str) -> bytes:
            try:
                return archive.extractfile(member(digest)).read()  # type: ignore[union-attr]
            except (KeyError, AttributeError):
                raise TerminalFailure(f"{path}: blob {digest} is missing", runtime=RUNTIME) from None

        async def store(desc: dict, layer: bool = False) -> None:
            """Writes desc's blob and everything it references, children first, with the GC labels."""
            kind = desc.get("mediaType")
            if kind in media.INDEXES or kind in media.MANIFESTS:
                raw = await blob(desc["digest"])
                doc = json.loads(raw)
                labels: dict[str, str] = {}
                if "manifests" in doc:
                    for i, child in enumerate(doc["manifests"]):
                        if archive_has(child["digest"]):
                            await store(child)
                            labels[GC_MANIFEST.format(i)] = child["digest"]
                else:
                    await store(doc["config"])
                    labels[GC_CONFIG] = doc["config"]["digest"]
                    for i, child in enumerate(doc.get("layers") or []):
                        await store(child, layer=True)
                        labels[GC_LAYER.format(i)] = child["digest"]
                await self.write_blob(lease, desc["digest"], len(raw), raw, labels)
            else:
                await self._write_member(archive, member(desc["digest"]), lease, what,
                                         loading=loading if layer else None)

        def archive_has(digest: str) -> bool:
            try:
                archive.getmember(member(digest))
                return True
            except KeyError:
                return False

        index = json.loads(archive.extractfile("index.json").read())  # type: ignore[union-attr]
        records = []
        for desc in index.get("manifests") or []:
            await store(desc)
            annotations = desc.get("annotations") or {}
            name = annotations.get("io.containerd.image.name") or annotations.get("org.opencontainers.image.ref.name")
            if not name:
                continue
            if ":" not in name and "/" not in name:  # a bare tag
                name = f"import-{desc['digest'].removeprefix('sha256:')[:12]}:{name}"
            records.append((str(parse(name)), types_pb2.Descriptor(
                media_type=desc.get("mediaType") or media.OCI_MANIFEST, digest=desc["digest"],
                size=int(desc.get("size") or 0))))
        return records

    async def pull(self, ref: str, progress: ProgressCallback | None = None) -> Image:
        from .pull import pull

        return await pull(self, ref, progress)

    def _image(self, resolved: Resolved, names: list[str]) -> Image:
        return Image(id=resolved.config_digest, references=tuple(familiar(n) for n in names), size=resolved.size,
                     created=resolved.config.get("created"), digest=resolved.manifest_digest, runtime=RUNTIME)

    async def images(self) -> list[Image]:
        by_id: dict[str, tuple[Resolved, list[str]]] = {}
        for record in await self._records():
            try:
                resolved = await self.resolve(record)
            except (RuntimeFailure, ValueError, KeyError):
                continue  # an image of another client whose blobs are not all here
            by_id.setdefault(resolved.config_digest, (resolved, []))[1].append(record.name)
        return [self._image(r, names) for r, names in by_id.values()]

    async def image_inspect(self, ref: str) -> dict:
        resolved = await self.image_config(ref)
        names = [r.name for r in await self._records() if r.name == resolved.name or
                 await self._config_of(r) == resolved.config_digest]
        config = resolved.config
        return {
            "Id": resolved.config_digest,
            "RepoTags": [familiar(n) for n in names if "@" not in n],
            "RepoDigests": [f"{familiar(parse(n).name)}@{resolved.manifest_digest}" for n in names],
            "Created": config.get("created"),
            "Architecture": config.get("architecture"),
            "Os": config.get("os"),
            "Config": config.get("config") or {},
            "RootFS": config.get("rootfs") or {},
            "Size": resolved.size,
        }

    async def _config_of(self, record: images_pb2.Image) -> str | None:
        try:
            return (await self.resolve(record)).config_digest
        except (RuntimeFailure, ValueError, KeyError):
            return None

    async def image_history(self, ref: str) -> list[HistoryEntry]:
        resolved = await self.image_config(ref)
        layers = iter(resolved.manifest.get("layers") or [])
        entries = []
        for step in resolved.config.get("history") or []:
            empty = bool(step.get("empty_layer"))
            layer = None if empty else next(layers, None)
            entries.append(HistoryEntry(created_by=step.get("created_by") or "", size=int(layer["size"]) if layer else 0,
                                        created=step.get("created"), id=layer["digest"] if layer else None,
                                        comment=step.get("comment"), empty_layer=empty))
        return list(reversed(entries))

    async def _users(self, name: str) -> list[str]:
        """Ids of orchestr's containers made from image name."""
        from .proto import containers_pb2

        with self.conn.errors("the container list"):
            listed = await self.conn.containers.List(containers_pb2.ListContainersRequest(
                filters=[f"image=={name}"]), metadata=self.conn.metadata)
        return [c.id for c in listed.containers]

    async def image_remove(self, ref: str, *, force: bool = False) -> None:
        record = await self._get_record(ref)
        users = await self._users(record.name)
        if users and not force:
            raise Conflict(f"image {ref} is used by container {users[0]}; remove it first, or force",
                           runtime=RUNTIME)
        names = [record.name]
        if "@" not in record.name:  # the last tag of a manifest takes its name@digest records with it, as Docker's
            others = [r for r in await self._records() if r.target.digest == record.target.digest and
                      r.name != record.name]
            if not [r for r in others if "@" not in r.name]:
                names += [r.name for r in others]
        for name in names:
            with self.conn.errors(f"image {ref}", missing=f"image {ref} not found in containerd"):
                try:
                    await self.conn.images.Delete(images_pb2.DeleteImageRequest(name=name, sync=True),
                                                  metadata=self.conn.metadata)
                except grpc.RpcError as e:
                    if code(e) != grpc.StatusCode.NOT_FOUND or name == record.name:
                        raise

    async def image_prune(self) -> list[str]:
        """Removes the images no container uses that have no tag (a name@digest only), as `docker image prune`."""
        removed = []
        for record in await self._records():
            if "@" not in record.name or await self._users(record.name):
                continue
            with contextlib.suppress(NotFound):
                await self.image_remove(record.name)
                removed.append(familiar(record.name))
        return removed
