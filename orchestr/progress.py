"""Pull and import progress on stderr, drawn from the runtimes' PullProgress reports: on a terminal a block of one
line per layer (status, bar, bytes, rate) redrawn in place, as docker pull does; otherwise one line per layer done."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from .model import PullProgress, PullStatus

_FINISHED = (PullStatus.DONE, PullStatus.EXISTS)
_BAR = 20
REDRAW_EVERY = 0.1  # seconds: byte counts come per chunk, far more often than anyone can read them


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.2f}GB"


def _short(layer: str) -> str:
    return layer.removeprefix("sha256:")[:12]


@dataclass
class _Layer:
    ref: str
    layer: str
    status: PullStatus
    current: int
    total: int | None
    started: float  # when its bytes began to move, for the rate
    base: int  # bytes already there then

    def line(self, now: float) -> str:
        text = f"{_short(self.layer)}: {self.status.capitalize():<11}"
        if self.status in _FINISHED:
            return f"{text} {_bytes(self.total)}" if self.total else text.rstrip()
        moving = self.status in (PullStatus.DOWNLOADING, PullStatus.LOADING)
        if self.total and not moving:
            text += f" {_bytes(self.total)}"
        elif self.total:
            filled = min(_BAR, _BAR * self.current // self.total)
            arrow = ">" if filled < _BAR else ""
            bar = "=" * filled + arrow + " " * (_BAR - filled - len(arrow))
            text += f" [{bar}] {_bytes(self.current)}/{_bytes(self.total)}"
        elif self.current:
            text += f" {_bytes(self.current)}"
        elapsed = now - self.started
        if moving and elapsed > 0 and self.current > self.base:
            text += f" {_bytes((self.current - self.base) / elapsed)}/s"
        return text


class PullPrinter:
    """A progress callback for Runtime.pull, import_image and ensure_image (and for Client.apply and run, which pass
    it on); use it as a context manager around the call. quiet: print nothing."""

    def __init__(self, stream=None, *, quiet: bool = False, clock: Callable[[], float] = time.monotonic):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.live = not quiet and _terminal(self.stream)
        self.clock = clock
        self.layers: dict[tuple[str, str], _Layer] = {}
        self._drawn = 0  # lines of the live block on the screen
        self._printed: set[tuple[str, str]] = set()  # layers a plain line was printed for
        self._last_draw = 0.0

    def __enter__(self) -> PullPrinter:
        return self

    def __exit__(self, *exc) -> None:
        if self.live and self.layers:
            self._draw()

    def __call__(self, p: PullProgress) -> None:
        if self.quiet:
            return
        if p.layer is None:
            if p.status == PullStatus.DONE:
                self._image_done(p.ref)
            return
        key = (p.ref, p.layer)
        now = self.clock()
        seen = self.layers.get(key)
        if seen is None:
            seen = self.layers[key] = _Layer(p.ref, p.layer, p.status, p.current, p.total, now, p.current)
            changed = True
        else:
            changed = seen.status != p.status
            if changed and p.status in (PullStatus.DOWNLOADING, PullStatus.LOADING):
                seen.started, seen.base = now, p.current
            seen.status, seen.current = p.status, p.current
            seen.total = p.total or seen.total
        if not self.live:
            if changed and p.status in _FINISHED and key not in self._printed:  # once, whatever comes after
                self._printed.add(key)
                self._write(f"{p.ref}: {seen.line(now)}\n")
            return
        # a change of status, and a download's last bytes, always show: the rest at most every REDRAW_EVERY
        if changed or p.current == p.total or now - self._last_draw >= REDRAW_EVERY:
            self._draw()

    def above(self, show: Callable[[], None]) -> None:
        """Call show (which prints lines of its own) with the live block out of the way, then draw it again."""
        if not self.live or not self._drawn:
            show()
            return
        self._erase()
        self.stream.flush()
        show()
        self._draw()

    def _image_done(self, ref: str) -> None:
        """An image is whole: its layers leave the live block, their last lines kept above it."""
        mine = [k for k in self.layers if k[0] == ref]
        if not mine:
            return
        if self.live:
            now = self.clock()
            lines = [f"{ref}:\n"] + [f"  {self.layers[k].line(now)}\n" for k in mine]
            for k in mine:
                del self.layers[k]
            self.above(lambda: self._write("".join(lines)))
        else:
            for k in mine:
                del self.layers[k]

    def _erase(self) -> None:
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _draw(self) -> None:
        now = self._last_draw = self.clock()
        lines, ref = [], None
        for layer in self.layers.values():
            if layer.ref != ref:
                ref = layer.ref
                lines.append(f"{ref}:")
            lines.append(f"  {layer.line(now)}")
        width = _width(self.stream)  # a line the terminal wraps would throw the count of lines to redraw off
        self._erase()
        self._write("".join(line[:width] + "\n" for line in lines))
        self._drawn = len(lines)

    def _write(self, text: str) -> None:
        sys.stdout.flush()  # whatever the command printed comes first where both streams go to one screen
        self.stream.write(text)
        self.stream.flush()


def _terminal(stream) -> bool:
    return stream.isatty() and os.environ.get("TERM") != "dumb"


def _width(stream) -> int:
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        columns = 0
    return max(20, columns - 1) if columns else 79  # a terminal that tells no size (0) is taken as 80 wide
