"""Pulling an image from its registry into the store: resolve, pick the platform, fetch and unpack layers."""

from __future__ import annotations

import functools
import json

import anyio

from orchestr.errors import RuntimeFailure
from orchestr.model import PullProgress, PullStatus
from orchestr.registry import media, platform
from orchestr.registry.client import RegistryClient
from orchestr.registry.reference import parse
from orchestr.runtime import ProgressCallback

from .store import ImageStore, Stored, digest_of, manifest_layers
from .tasks import run_all

PARALLEL_DOWNLOADS = 4


async def pull(store: ImageStore, ref_text: str, progress: ProgressCallback | None = None) -> Stored:
    ref = parse(ref_text)
    what = str(ref)

    def report(layer: str | None, status: PullStatus, current: int = 0, total: int | None = None) -> None:
        if progress:
            progress(PullProgress(ref_text, layer, status, current, total))

    async with store.using(), RegistryClient(ref.registry, ref.repository) as client:
        report(None, PullStatus.RESOLVING)
        raw, content_type = await client.manifest(ref.api_reference)
        top_digest = digest_of(raw)
        doc = _json(raw, what)
        if media.kind(doc, content_type, what) == "index":
            store.put_bytes(raw, what, top_digest)  # kept while a name@index-digest ref names it
            chosen = platform.select(doc.get("manifests") or [], what)
            raw, content_type = await client.manifest(chosen["digest"])
            doc = _json(raw, what)
            if media.kind(doc, content_type, what) != "manifest":
                raise RuntimeFailure(f"{what}: the index entry for {platform.host()} is not an image manifest")
        config_desc = doc["config"]
        if config_desc.get("mediaType") not in (media.OCI_CONFIG, media.DOCKER_CONFIG, None):
            raise RuntimeFailure(f"{what}: not a container image (config type {config_desc.get('mediaType')})")

        async def fetch_config(writer):  # type: ignore[no-untyped-def]
            await client.blob(config_desc["digest"], writer, config_desc.get("size"))

        await store.ensure_blob(config_desc["digest"], what, fetch_config)
        config = store.read_json(config_desc["digest"])
        layers = manifest_layers(doc, config, what)
        sizes = {d["digest"]: int(d.get("size") or 0) for d in doc["layers"]}
        total = sum(sizes.values())
        done: dict[str, int] = {}
        limiter = anyio.CapacityLimiter(PARALLEL_DOWNLOADS)

        def moved(blob: str, current: int) -> None:
            done[blob] = current
            report(blob, PullStatus.DOWNLOADING, current, sizes[blob])
            report(None, PullStatus.DOWNLOADING, sum(done.values()), total)

        async def layer(blob: str, diff_id: str) -> None:
            if store.has_layer(diff_id) and store.has_blob(blob):
                done[blob] = sizes[blob]
                report(blob, PullStatus.EXISTS, sizes[blob], sizes[blob])
                return
            report(blob, PullStatus.WAITING, 0, sizes[blob])

            async def fetch(writer):  # type: ignore[no-untyped-def]
                async with limiter:
                    await client.blob(blob, writer, sizes[blob] or None, lambda n: moved(blob, n))
                report(blob, PullStatus.EXTRACTING, sizes[blob], sizes[blob])

            await store.add_layer(blob, diff_id, what, fetch)
            report(blob, PullStatus.DONE, sizes[blob], sizes[blob])

        await run_all(functools.partial(layer, blob, diff_id) for blob, diff_id in layers)

        manifest_digest = store.put_bytes(raw, what)
        refs = [r for r in (ref.tagged, ref.with_digest(ref.digest or top_digest)) if r]
        store.record(manifest_digest, refs)
        report(None, PullStatus.DONE, total, total)
        return store.get(manifest_digest)


def _json(raw: bytes, what: str) -> dict:
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise RuntimeFailure(f"{what}: the registry sent a manifest that is not a JSON object")
    return doc
