"""The native runtime: image verbs on orchestr's own store; container verbs handed to Containers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestr.config import Config, private_dir
from orchestr.errors import Conflict, NotFound, OrchestrError, TerminalFailure, located
from orchestr.model import (
    EXEC_OUTPUT_LIMIT, Container, ContainerSpec, Event, ExecResult, HistoryEntry, Image, LogLine, Port, Resources,
    Stats,
)
from orchestr.runtime import Capabilities, EventDelivery, ProgressCallback

if TYPE_CHECKING:
    from .containers import Containers
    from .images.store import ImageStore, Stored
    from .store import ContainerStore


class NativeRuntime:
    name = "native"
    # The supervisor applies restart policies with no orchestr process running; events are lines the runtime
    # and the supervisor append to a log, which events() polls. cgroups give limits, pause, stats and updates.
    # A one-off run can have a terminal (run_blocking), an exec cannot.
    capabilities = Capabilities(
        restarts=True, events=EventDelivery.POLLED, limits=True, image_import=True, pause=True, signal=True,
        stats=True, blocking_run=True, run_tty=True, blocking_list=True, image_export=True, update=True, bridge_capacity=True,
        remove_network=True, service_ports=True, exec_tty=True,
    )

    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = config.state_dir / "native"
        self._store: ImageStore | None = None
        self._containers_impl: Containers | None = None
        self._records_impl: ContainerStore | None = None

    @property
    def store(self) -> ImageStore:
        if self._store is None:
            from .images.store import ImageStore

            private_dir(self.config.state_dir)  # tightens an older orchestr's 0755 ones
            private_dir(self.root)
            self._store = ImageStore(self.root / "images")
        return self._store

    @property
    def _records(self) -> ContainerStore:
        """The containers' records, for listing: reading them loads neither the verbs' modules nor the image store."""
        if self._containers_impl is not None:
            return self._containers_impl
        if self._records_impl is None:
            from .store import ContainerStore

            self._records_impl = ContainerStore(self.config, None)
        return self._records_impl

    @property
    def _containers(self) -> Containers:
        if self._containers_impl is None:
            containers = _containers_module()
            if containers is None:
                raise TerminalFailure("the native runtime's container support (containers.py) is not installed",
                                      runtime=self.name)
            self._containers_impl = containers.Containers(self.config, self.store)
        return self._containers_impl

    def _in_use(self, image_id: str) -> bool:
        if self._containers_impl is None and _containers_module() is None:
            return False
        return bool(self._containers.uses_image(image_id))

    # -- containers: every error says this runtime and the container ---------------------
    async def create(self, spec: ContainerSpec) -> Container:
        with located(self.name, spec.name):
            return await self._containers.create(spec)

    async def start(self, id: str) -> None:
        with located(self.name, id):
            await self._containers.start(id)

    async def stop(self, id: str, *, signal: str = "SIGTERM", timeout: float = 10.0) -> None:
        with located(self.name, id):
            await self._containers.stop(id, signal=signal, timeout=timeout)

    async def delete(self, id: str, *, force: bool = False) -> None:
        with located(self.name, id):
            await self._containers.delete(id, force=force)

    async def pause(self, id: str) -> None:
        with located(self.name, id):
            await self._containers.pause(id)

    async def resume(self, id: str) -> None:
        with located(self.name, id):
            await self._containers.resume(id)

    async def signal(self, id: str, signal: str) -> None:
        with located(self.name, id):
            await self._containers.signal(id, signal)

    async def stats(self, id: str) -> Stats:
        with located(self.name, id):
            return await self._containers.stats(id)

    async def update(self, id: str, resources: Resources) -> None:
        with located(self.name, id):
            await self._containers.update(id, resources)

    async def inspect(self, id: str) -> Container:
        with located(self.name, id):
            return await self._containers.inspect(id)

    async def list(self, namespace: str | None = None) -> list[Container]:
        with located(self.name):
            return self._records.listed(namespace)

    def list_blocking(self, namespace: str | None = None) -> list[Container]:
        with located(self.name):
            return self._records.listed(namespace)

    async def logs(self, id: str, *, follow: bool = False, tail: int | None = None) -> AsyncIterator[LogLine]:
        with located(self.name, id):
            async with contextlib.aclosing(self._containers.logs(id, follow=follow, tail=tail)) as lines:
                async for line in lines:
                    yield line

    async def exec(
        self, id: str, argv: Sequence[str], *, env: dict[str, str] | None = None, user: str | None = None,
        workdir: str | None = None, timeout: float | None = None, output: Callable[[LogLine], None] | None = None,
        output_limit: int = EXEC_OUTPUT_LIMIT,
    ) -> ExecResult:
        with located(self.name, id):
            return await self._containers.exec(id, argv, env=env, user=user, workdir=workdir, timeout=timeout,
                                               output=output, output_limit=output_limit)

    async def exec_terminal(self, id: str, argv: Sequence[str], *, stdin: int | None, stdout: int,
                            env: dict[str, str] | None = None, user: str | None = None,
                            workdir: str | None = None) -> int:
        with located(self.name, id):
            return await self._containers.exec_terminal(id, argv, stdin=stdin, stdout=stdout, env=env, user=user,
                                                        workdir=workdir)

    async def wait(self, id: str) -> int:
        with located(self.name, id):
            return await self._containers.wait(id)

    def events(self) -> AsyncIterator[Event]:
        return self._containers.events()

    async def reattach(self) -> list[Container]:
        return await self._containers.reattach()

    async def publish_service(
        self, namespace: str, service: str, ports: Sequence[Port], endpoints: Sequence[str],
    ) -> None:
        import anyio

        from .network import Network

        with located(self.name, f"{namespace}/{service}"):
            await anyio.to_thread.run_sync(Network(self.root).publish_service, namespace, service, list(ports),
                                           list(endpoints))

    async def published_services(self, namespace: str) -> list[str]:
        from .network import Network

        return Network(self.root).published_services(namespace)

    async def bridge_capacity(self, namespace: str) -> int:
        """How many containers the namespace's bridge network has addresses for (the planner refuses more)."""
        from .network import Network

        return Network(self.root).capacity(namespace)

    async def remove_network(self, namespace: str) -> None:
        """Removes the namespace's bridge, kept after its last container, and its rules."""
        import anyio

        from .network import Network

        await anyio.to_thread.run_sync(Network(self.root).remove, namespace)

    async def close(self) -> None:
        """Nothing to release: the supervisor outlives clients, and exits once idle for a minute."""

    def run_blocking(
        self, spec: ContainerSpec, *, output: Callable[[LogLine], None] | None = None, remove: bool = False,
        stdin: int | None = None, on_signal: str | None = None,
    ) -> tuple[Container, int] | None:
        """Runs a container to its end without an event loop; None, before anything changes, when its image is
        not in the store yet (pulling it needs the loop: use the async verbs then). stdin is the fd an
        interactive (spec.interactive) container reads; with spec.tty its terminal is relayed to output.
        on_signal ("forward" or "leave") takes over SIGTERM, SIGHUP and SIGINT meanwhile, as Client.run says."""
        try:
            self.store.lookup(spec.image)
        except NotFound:
            return None
        with located(self.name, spec.name):
            return self._containers.run(spec, output, remove, stdin, on_signal)

    # -- images: every error says this runtime ---------------------------------------
    async def ensure_image(self, ref: str, progress: ProgressCallback | None = None) -> Image:
        with located(self.name):
            try:
                return self._image(self.store.lookup(ref))
            except NotFound:
                return await self.pull(ref, progress)

    async def pull(self, ref: str, progress: ProgressCallback | None = None) -> Image:
        from .images.pull import pull  # the registry client loads only for the verbs that use it

        with located(self.name):
            stored = await pull(self.store, ref, progress)
            return self._image(self.store.lookup(stored.id))

    async def import_image(self, path: Path, progress: ProgressCallback | None = None) -> list[Image]:
        from .images import archive

        with located(self.name):
            imported = await archive.import_archive(self.store, Path(path), progress)
            return [self._image(self.store.lookup(s.id)) for s in imported]

    async def export_image(self, ref: str, path: Path) -> None:
        """Write the image as an OCI image-layout tarball, named by ref when ref has a tag."""
        import anyio

        from .images import archive

        with located(self.name):
            stored = self.store.lookup(ref)[0]
            name = None
            from orchestr.registry.reference import parse

            try:
                name = parse(ref).tagged
            except OrchestrError:  # an image id names no tag
                name = None
            if name not in stored.refs:
                name = next((r for r in stored.refs if "@" not in r), None)
            await anyio.to_thread.run_sync(archive.export_layout, self.store, stored, name, Path(path))

    async def images(self) -> list[Image]:
        with located(self.name):
            by_id: dict[str, list[Stored]] = {}
            for stored in self.store.all():
                by_id.setdefault(stored.id, []).append(stored)
            return [self._image(group) for group in by_id.values()]

    async def image_inspect(self, ref: str) -> dict:
        with located(self.name):
            group = self.store.lookup(ref)
            config = group[0].config
            tags, digests = _refs(group)
            inspect: dict[str, Any] = {
                "Id": group[0].id,
                "RepoTags": tags,
                "RepoDigests": digests,
                "Parent": "",
                "Comment": config.get("comment", ""),
                "Created": config.get("created"),
                "DockerVersion": config.get("docker_version", ""),
                "Author": config.get("author", ""),
                "Config": config.get("config") or {},
                "Architecture": config.get("architecture", ""),
                "Os": config.get("os", ""),
                "Size": self._size(group[0]),
                "RootFS": {"Type": config.get("rootfs", {}).get("type", "layers"), "Layers": group[0].diff_ids},
            }
            if config.get("variant"):
                inspect["Variant"] = config["variant"]
            return inspect

    async def image_history(self, ref: str) -> list[HistoryEntry]:
        with located(self.name):
            stored = self.store.lookup(ref)[0]
            diff_ids = iter(stored.diff_ids)
            history = stored.config.get("history") or [{} for _ in stored.diff_ids]
            entries = []
            for step in history:
                empty = bool(step.get("empty_layer"))
                diff_id = None if empty else next(diff_ids, None)
                entries.append(HistoryEntry(
                    created_by=step.get("created_by", ""),
                    size=self.store.layer_size(diff_id) if diff_id else 0,
                    created=step.get("created"),
                    id=diff_id,
                    comment=step.get("comment") or None,
                    empty_layer=empty,
                ))
            return entries[::-1]

    async def image_remove(self, ref: str, *, force: bool = False) -> None:
        import anyio

        with located(self.name):
            group = self.store.lookup(ref)
            image_id = group[0].id
            all_refs = {r for s in group for r in s.refs}
            by_id = ref.startswith("sha256:") or not any(r in all_refs for r in _ref_keys(ref))
            if not by_id:
                dropped = set(_ref_keys(ref)) & all_refs
                if any("@" not in r for r in all_refs - dropped):
                    self.store.forget(set(), dropped)  # other tags remain: untag only, as `docker rmi` does
                    return
            manifests = {s.manifest_digest for s in group}
            if self._in_use(image_id):
                if not force:
                    raise Conflict(f"image {ref!r} ({image_id[:19]}) is used by a container; remove it first or force")
                self.store.forget(manifests, all_refs, keep_manifests=True)  # its layers stay while the container runs
                return
            self.store.forget(manifests, all_refs)
            await anyio.to_thread.run_sync(self.store.gc)

    async def image_prune(self) -> list[str]:
        import anyio

        with located(self.name):
            keep = {s.id for s in self.store.all() if not s.refs and self._in_use(s.id)}
            return await anyio.to_thread.run_sync(self.store.gc, keep)

    # -- shaping ------------------------------------------------------------------------
    def _size(self, stored: Stored) -> int:
        return sum(self.store.layer_size(d) for d in dict.fromkeys(stored.diff_ids))

    def _image(self, group: list[Stored]) -> Image:
        tags, digests = _refs(group)
        return Image(
            id=group[0].id,
            references=tuple(tags + digests),
            size=self._size(group[0]),
            created=group[0].config.get("created"),
            digest=group[0].manifest_digest,
            runtime=self.name,
        )


def _refs(group: list[Stored]) -> tuple[list[str], list[str]]:
    from orchestr.registry.reference import familiar

    refs = sorted({familiar(r) for s in group for r in s.refs})
    return [r for r in refs if "@" not in r], [r for r in refs if "@" in r]


def _ref_keys(ref: str) -> list[str]:
    """The index keys ref could be stored under; none for an image id."""
    from orchestr.registry.reference import parse

    try:
        parsed = parse(ref)
    except OrchestrError:
        return []
    return [parsed.with_digest(parsed.digest) if parsed.digest else str(parsed)]


def _containers_module() -> Any:
    try:
        from . import containers
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.containers":
            raise
        return None
    return containers
