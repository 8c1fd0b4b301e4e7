"""Pull and import progress on stderr: a live per-layer view on a terminal, status changes otherwise."""

from __future__ import annotations

import sys

from .model import PullProgress


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}MB"


class PullPrinter:
    """A progress callback for Runtime.pull/import_image; use as a context manager around the call."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.layers: dict[str, PullProgress] = {}
        self._drawn = 0
        self._last_status: dict[str | None, str] = {}

    def __enter__(self) -> PullPrinter:
        return self

    def __exit__(self, *exc) -> None:
        if self.live and self._drawn:
            self._draw()

    def __call__(self, p: PullProgress) -> None:
        if p.layer is None:
            if self._last_status.get(None) != p.status:
                self._last_status[None] = p.status
                self._line(f"{p.ref}: {p.status}")
            return
        self.layers[p.layer] = p
        if self.live:
            self._draw()
        elif self._last_status.get(p.layer) != p.status:
            self._last_status[p.layer] = p.status
            self._line(f"{_short(p.layer)}: {p.status}")

    def _line(self, text: str) -> None:
        if self.live and self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0
        print(text, file=self.stream, flush=True)

    def _draw(self) -> None:
        lines = []
        done = total = 0
        for layer, p in self.layers.items():
            size = f" {_mb(p.current)}/{_mb(p.total)}" if p.total else ""
            lines.append(f"{_short(layer)}: {p.status}{size}")
            done += p.current
            total += p.total or 0
        if total:
            lines.append(f"total: {_mb(done)}/{_mb(total)} ({100 * done // max(total, 1)}%)")
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        self._drawn = len(lines)


def _short(layer: str) -> str:
    return layer.removeprefix("sha256:")[:12]
