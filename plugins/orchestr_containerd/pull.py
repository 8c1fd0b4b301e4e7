"""Pulling an image from its registry into containerd's store with orchestr's shared registry client (the same auth
as every runtime: anonymous, basic, bearer tokens, Docker's config.json and credential helpers)."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio

from orchestr.errors import RuntimeFailure
from orchestr.model import Image, PullProgress, PullStatus
from orchestr.registry import media, platform
from orchestr.registry.client import RegistryClient
from orchestr.registry.reference import parse
from orchestr.runtime import ProgressCallback

from .client import RUNTIME
from .images import CHUNK, GC_CONFIG, GC_LAYER, GC_MANIFEST, sha256
from .proto import images_pb2, types_pb2

if TYPE_CHECKING:
    from .images import Images


class _Spool:
    """A blob as it arrives, in a temporary file, hashed; then handed to the content store."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the pull
        self.size = 0
        self.sha = hashlib.sha256()

    def reset(self) -> None:
        self.file.seek(0)
        self.file.truncate()
        self.size, self.sha = 0, hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.sha.update(data)
        self.size += len(data)

    async def chunks(self) -> AsyncIterator[bytes]:
        self.file.seek(0)
        while chunk := await anyio.to_thread.run_sync(self.file.read, CHUNK):
            yield chunk


async def pull(store: Images, ref_text: str, progress: ProgressCallback | None = None) -> Image:
    ref = parse(ref_text)
    what = str(ref)

    def report(layer: str | None, status: PullStatus, current: int = 0, total: int | None = None) -> None:
        if progress:
            progress(PullProgress(ref_text, layer, status, current, total))

    async with store.lease() as lease, RegistryClient(ref.registry, ref.repository) as client:
        report(None, PullStatus.RESOLVING)
        raw, content_type = await client.manifest(ref.api_reference)
        top = types_pb2.Descriptor(media_type=content_type.split(";")[0].strip(), digest=sha256(raw), size=len(raw))
        doc = json.loads(raw)
        index_raw = None
        if media.kind(doc, content_type, what) == "index":
            index_raw, index_doc = raw, doc
            chosen = platform.select(doc.get("manifests") or [], what)
            raw, content_type = await client.manifest(chosen["digest"])
            doc = json.loads(raw)
            if media.kind(doc, content_type, what) != "manifest":
                raise RuntimeFailure(f"{what}: the index entry for {platform.host()} is not an image manifest",
                                     runtime=RUNTIME)
        if not top.media_type:
            top.media_type = doc.get("mediaType") or media.OCI_MANIFEST

        async def fetch(desc: dict, layer: bool) -> None:
            # the config is a blob too, but no layer: docker shows none for it either
            shown = report if layer else (lambda *_: None)
            if await store.has_blob(desc["digest"]):  # whether it is unpacked too, unpack tells
                shown(desc["digest"], PullStatus.DOWNLOADED, int(desc.get("size") or 0), int(desc.get("size") or 0))
                return
            spool = _Spool()
            try:
                size = int(desc.get("size") or 0)
                await client.blob(desc["digest"], spool, size or None,
                                  lambda n: shown(desc["digest"], PullStatus.DOWNLOADING, n, size))
                if "sha256:" + spool.sha.hexdigest() != desc["digest"]:
                    raise RuntimeFailure(f"{what}: blob {desc['digest']} arrived with another digest; refused",
                                         runtime=RUNTIME)
                await store.write_blob(lease, desc["digest"], spool.size, spool.chunks())
                shown(desc["digest"], PullStatus.DOWNLOADED, size, size)
            finally:
                spool.file.close()

        limiter = anyio.CapacityLimiter(4)

        async def fetch_limited(desc: dict, layer: bool) -> None:
            async with limiter:
                await fetch(desc, layer)

        async with anyio.create_task_group() as group:
            for layer in doc.get("layers") or []:
                report(layer["digest"], PullStatus.WAITING, 0, int(layer.get("size") or 0))
                group.start_soon(fetch_limited, layer, True)
            group.start_soon(fetch_limited, doc["config"], False)
        labels = {GC_CONFIG: doc["config"]["digest"],
                  **{GC_LAYER.format(i): layer["digest"] for i, layer in enumerate(doc.get("layers") or [])}}
        await store.write_blob(lease, sha256(raw), len(raw), raw, labels)
        if index_raw is not None:
            children = {GC_MANIFEST.format(i): m["digest"] for i, m in enumerate(index_doc.get("manifests") or [])
                        if m["digest"] == sha256(raw)}
            await store.write_blob(lease, top.digest, len(index_raw), index_raw, children)
        names = [n for n in (ref.tagged, ref.with_digest(ref.digest or top.digest)) if n]
        for name in names:
            await store._record(name, top)
        resolved = await store.resolve(images_pb2.Image(name=names[0], target=top))
        await store.unpack(lease, resolved, progress, ref_text)
        report(None, PullStatus.DONE)
        return store._image(resolved, names)
