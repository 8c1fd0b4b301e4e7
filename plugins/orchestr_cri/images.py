"""The cri runtime's image verbs, through CRI's ImageService: PullImage (with Docker's registry credentials),
ListImages, ImageStatus, RemoveImage.

CRI has no verb to import an archive. On containerd, whose CRI plugin keeps its images in containerd's `k8s.io`
namespace, orchestr imports through containerd's own API with its client, `ctr` (shipped with containerd),
at the same socket; any other CRI runtime refuses `images import` in one line.
CRI has no untag either: containerd's RemoveImage removes the image with every name it has (CRI-O's untags the
name given), so on containerd orchestr refuses that without force when the image has other names.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import grpc

from orchestr.errors import Conflict, NotFound, RuntimeFailure, TerminalFailure
from orchestr.model import HistoryEntry, Image, PullProgress, PullStatus
from orchestr.registry import auth, reference
from orchestr.runtime import ProgressCallback

from . import mapping
from .client import RUNTIME, Connection, code
from .proto import cri_pb2 as pb

CONTAINERD_NAMESPACE = "k8s.io"  # where containerd's CRI plugin keeps images and containers
PULL_DEADLINE = 3600.0  # seconds: a pull of a big image over a slow link
_UNPACKED = re.compile(r"^unpacking (\S+) \((sha256:[0-9a-f]{64})\)")


class Images:
    """The ImageStore verbs over a Connection; mixed into CriRuntime."""

    name = RUNTIME
    conn: Connection

    async def _image_status(self, ref: str, verbose: bool = False) -> pb.ImageStatusResponse:
        with self.conn.errors(f"image {ref}", missing=f"image {ref} not found"):
            answer = await self.conn.images.ImageStatus(
                pb.ImageStatusRequest(image=pb.ImageSpec(image=ref), verbose=verbose), timeout=60)
        if not answer.image.id:  # CRI answers an image it does not have with an empty one
            raise NotFound(f"image {ref} not found", runtime=RUNTIME)
        return answer

    async def ensure_image(self, ref: str, progress: ProgressCallback | None = None) -> Image:
        try:
            return mapping.image((await self._image_status(ref)).image)
        except NotFound:
            return await self.pull(ref, progress)

    async def pull(self, ref: str, progress: ProgressCallback | None = None) -> Image:
        registry = reference.parse(ref).registry
        creds = await asyncio.to_thread(auth.credentials, registry)  # a credential helper is a process to run
        request = pb.PullImageRequest(image=pb.ImageSpec(image=ref))
        if creds is not None:
            # the host the runtime will ask, as a URL: containerd compares it with that host, CRI-O takes it too
            host = "registry-1.docker.io" if registry == reference.DEFAULT_REGISTRY else registry
            request.auth.CopyFrom(pb.AuthConfig(username=creds[0], password=creds[1], server_address=f"https://{host}"))
        if progress:
            progress(PullProgress(ref, None, PullStatus.RESOLVING))
        try:
            pulled = await self.conn.images.PullImage(request, timeout=PULL_DEADLINE)
        except grpc.RpcError as e:
            details = " ".join(str(e.details()).split())
            if code(e) == grpc.StatusCode.NOT_FOUND or " not found" in details:
                raise NotFound(f"image {ref} not found in its registry: {details}", runtime=RUNTIME) from None
            raise self.conn.translate(e, f"cannot pull image {ref}") from None
        image = mapping.image((await self._image_status(pulled.image_ref or ref)).image)
        if progress:
            progress(PullProgress(ref, None, PullStatus.DONE))
        return image

    async def import_image(self, path: Path, progress: ProgressCallback | None = None) -> list[Image]:
        path = Path(path)
        if not path.is_file():
            raise NotFound(f"image archive {path} not found", runtime=RUNTIME)
        name = await self.conn.runtime_name()
        ctr = shutil.which("ctr")
        if name != "containerd" or not self.conn.address.startswith("unix:") or ctr is None:
            raise TerminalFailure(
                f"cannot import {path}: CRI has no verb to import an image archive, and {name or 'this runtime'} offers "
                "no other way orchestr knows (only containerd's, through ctr); push the image to a registry and pull it",
                runtime=RUNTIME)
        socket = self.conn.address.removeprefix("unix://").removeprefix("unix:")
        if progress:
            progress(PullProgress(str(path), None, PullStatus.LOADING))
        proc = await asyncio.create_subprocess_exec(
            ctr, "--address", socket, "-n", CONTAINERD_NAMESPACE, "images", "import", str(path),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode != 0:
            why = (err.decode(errors="replace").strip() or f"exit {proc.returncode}").splitlines()[-1]
            raise RuntimeFailure(f"cannot import {path}: ctr images import: {why}", runtime=RUNTIME)
        found: dict[str, Image] = {}
        for line in out.decode(errors="replace").splitlines():
            if m := _UNPACKED.match(line.strip()):
                image = mapping.image((await self._image_status(m[1])).image)
                found.setdefault(image.id, image)
        if progress:
            progress(PullProgress(str(path), None, PullStatus.DONE))
        return list(found.values())

    async def images(self) -> list[Image]:
        with self.conn.errors("images"):
            listed = await self.conn.images.ListImages(pb.ListImagesRequest(), timeout=60)
        return [mapping.image(i) for i in listed.images]

    async def image_inspect(self, ref: str) -> dict:
        answer = await self._image_status(ref, verbose=True)
        return mapping.inspect(answer.image, dict(answer.info))

    async def image_history(self, ref: str) -> list[HistoryEntry]:
        answer = await self._image_status(ref, verbose=True)
        return mapping.history(dict(answer.info))

    async def _users(self) -> dict[str, list[str]]:
        """image id -> the ids of the runtime's containers made from it (every container, not only orchestr's)."""
        with self.conn.errors("containers"):
            listed = await self.conn.runtime.ListContainers(pb.ListContainersRequest(), timeout=60)
        users: dict[str, list[str]] = {}
        for c in listed.containers:
            for key in {c.image_ref, c.image_id, c.image.image} - {""}:
                users.setdefault(key, []).append(c.id)
        return users

    async def image_remove(self, ref: str, *, force: bool = False) -> None:
        image = (await self._image_status(ref)).image
        by_id = ref == image.id or image.id.startswith(f"sha256:{ref}")
        if await self.conn.runtime_name() == "containerd" and not by_id:
            # containerd removes an image with every name it has (CRI-O untags the one given)
            others = sorted({mapping.familiar(r) for r in image.repo_tags} - {ref, mapping.familiar(ref)})
            if others and not force:
                raise Conflict(f"image {ref} is also named {', '.join(others)}, and containerd removes an image with "
                               "every name it has (CRI cannot untag); force removes them all", runtime=RUNTIME)
        if not force:
            users = await self._users()
            using = users.get(image.id) or next((users[r] for r in [*image.repo_tags, *image.repo_digests]
                                                 if r in users), None)
            if using:
                raise Conflict(f"image {ref} is in use by container {using[0][:12]} (remove it first, or force)",
                               runtime=RUNTIME)
        with self.conn.errors(f"image {ref}"):
            await self.conn.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=ref)), timeout=120)

    async def image_prune(self) -> list[str]:
        """Removes images with no name that no container of the runtime uses, as `docker image prune` removes
        dangling images; named ones (the sandbox image, Kubernetes' own) stay."""
        with self.conn.errors("images"):
            listed = await self.conn.images.ListImages(pb.ListImagesRequest(), timeout=60)
        users = await self._users()
        removed = []
        for item in listed.images:
            if item.repo_tags or item.pinned or item.id in users or any(d in users for d in item.repo_digests):
                continue
            with self.conn.errors(f"image {item.id}"):
                await self.conn.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=item.id)),
                                                   timeout=120)
            removed.append(item.id)
        return removed


def image_config(info: dict[str, str]) -> dict:
    """The image's config (Entrypoint, Cmd, ...) from ImageStatus's verbose info; {} when the runtime gives none."""
    return mapping.image_spec(info).get("config") or {}
