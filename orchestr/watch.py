"""Spec files the controller watches (`orchestr controller -f DIR_OR_FILE...`): each change is validated and applied.

Files and directories (their *.yaml and *.yml files) are looked at every second; a file whose size, time or inode
changed, or that came or went, makes the whole set load again. A set with an error is reported (file:line) and
changes nothing: the last good one stays applied. Services whose file was removed, or that a file no longer
declares, are deleted. The looks cost a stat per file: no inotify, so that editors that replace files by renaming
them, and files on any file system, are seen alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from .errors import OrchestrError

if TYPE_CHECKING:
    from .api import Client
    from .spec import Service

POLL = 1.0  # seconds between two looks
SUFFIXES = (".yaml", ".yml")


class SpecWatcher:
    def __init__(self, client: Client, paths: Sequence[str | Path], log: Callable[..., None]):
        self.oc = client
        self.paths = [Path(p) for p in paths]
        self.log = log
        self.seen: dict[str, tuple[int, int, int]] | None = None
        self.applied: list[Service] = []  # the last good set

    def files(self) -> dict[str, tuple[int, int, int]]:
        """Every watched file now, with what tells a change (mtime_ns, size, inode)."""
        found: dict[str, tuple[int, int, int]] = {}
        for path in self.paths:
            if path.is_dir():
                names = sorted(str(p) for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
            else:
                names = [str(path)]
            for name in names:
                try:
                    st = os.stat(name)
                except FileNotFoundError:
                    continue
                found[name] = (st.st_mtime_ns, st.st_size, st.st_ino)
        return found

    async def run(self, changed: Callable[[str], None]) -> None:
        """Applies the files at once, then again after each change; changed is told of each apply."""
        while True:
            now = self.files()
            if now != self.seen:
                self.seen = now
                await self.apply(sorted(now))
                changed("files")
            await anyio.sleep(POLL)

    async def apply(self, files: list[str]) -> None:
        from .spec import load

        try:
            services = load(files) if files else []
        except OrchestrError as e:
            self.log("error", "spec files not applied: the last good ones stay", error=str(e))
            return
        keys = {(s.namespace, s.name) for s in services}
        gone = [s for s in self.applied if (s.namespace, s.name) not in keys]
        try:
            if gone:
                result = await self.oc.delete(gone, sources=files)
                self.log("info" if result.ok else "error", "deleted services no longer in the files",
                         services=[f"{s.namespace}/{s.name}" for s in gone], failed=[o.error for o in result.failed])
            if services:
                result = await self.oc.apply(services, sources=files, settle=0)
                self.log("info" if result.ok else "error", "applied spec files", files=files,
                         actions=len(result.plan), failed=[o.error for o in result.failed])
        except OrchestrError as e:
            self.log("error", "spec files not applied", error=str(e))
            return
        self.applied = services
