"""Measuring: contenders run alternately after a warm-up, their samples summarised and compared."""

from __future__ import annotations

import contextlib
import math
import statistics
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

Trial = Callable[[], "float | dict[str, float]"]  # one measurement: a value, or {metric: value}


class Skip(Exception):
    """A contender (or a whole scenario) cannot run here yet; str() says why."""


@dataclass(frozen=True, slots=True)
class Goal:
    text: str  # for people, e.g. "10k services under 50 ms"
    max_value: float | None = None  # the row's median must not exceed this
    max_ratio: float | None = None  # the row's first orchestr/anchor ratio must not exceed this

    def as_dict(self) -> dict:
        return {"text": self.text, "max_value": self.max_value, "max_ratio": self.max_ratio}


@dataclass(frozen=True, slots=True)
class Contender:
    """One tool in a comparison. prepare() does the untimed set-up and yields the trial; leaving it cleans up."""

    tool: str
    prepare: Callable[[], AbstractContextManager[Trial]]
    versus: tuple[str, ...] = ()  # orchestr contenders this anchor is compared with; empty for orchestr's own rows
    goal: Goal | None = None


@dataclass(slots=True)
class Series:
    tool: str
    versus: tuple[str, ...]
    goal: Goal | None
    status: str = "ran"  # ran | skipped | failed
    reason: str | None = None
    samples: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "tool": self.tool,
            "role": "anchor" if self.versus else "orchestr",
            "versus": list(self.versus),
            "status": self.status,
            "reason": self.reason,
            "goal": self.goal.as_dict() if self.goal else None,
            "n": len(self.samples),
            "samples": self.samples,
            "summary": summary(self.samples),
        }


def summary(samples: Sequence[float]) -> dict | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return {
        "median": statistics.median(ordered),
        "p10": percentile(ordered, 0.10),
        "p90": percentile(ordered, 0.90),
        "stdev": statistics.stdev(ordered) if len(ordered) > 1 else 0.0,
        "min": ordered[0],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default), on sorted samples."""
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def compare(case: str, contenders: Sequence[Contender], *, repeat: int, warmup: int, unit: str = "s") -> list[dict]:
    """Runs every contender warmup + repeat times, alternating (A B A B ...), and returns one group per metric.

    A contender that cannot be prepared is skipped with its reason; one whose trial raises is
    marked failed and dropped from later rounds, so one broken tool never stops the others.
    """
    series = {c.tool: Series(c.tool, c.versus, c.goal) for c in contenders}
    by_metric: dict[str, dict[str, list[float]]] = {}
    with contextlib.ExitStack() as stack:
        active: list[tuple[Contender, Trial]] = []
        for c in contenders:
            try:
                active.append((c, stack.enter_context(c.prepare())))
            except Skip as e:
                series[c.tool].status, series[c.tool].reason = "skipped", str(e)
            except Exception as e:  # noqa: BLE001 - reported in the results, the other tools go on
                series[c.tool].status, series[c.tool].reason = "failed", f"set-up: {describe(e)}"
        for round_ in range(warmup + repeat):
            for c, trial in list(active):
                try:
                    value = trial()
                except Exception as e:  # noqa: BLE001 - as above
                    series[c.tool].status, series[c.tool].reason = "failed", describe(e)
                    active.remove((c, trial))
                    continue
                if round_ < warmup:
                    continue
                for metric, v in (value.items() if isinstance(value, dict) else [("", value)]):
                    by_metric.setdefault(metric, {}).setdefault(c.tool, []).append(v)
    metrics = list(by_metric) or [""]
    groups = []
    for metric in metrics:
        rows = []
        for c in contenders:
            s = series[c.tool]
            row = Series(s.tool, s.versus, s.goal, s.status, s.reason, by_metric.get(metric, {}).get(c.tool, []))
            rows.append(row.as_dict())
        groups.append({
            "case": f"{case}: {metric}" if metric else case,
            "unit": unit,
            "repeat": repeat,
            "warmup": warmup,
            "series": rows,
        })
    return groups


def describe(e: BaseException) -> str:
    if isinstance(e, subprocess.CalledProcessError):
        out = (e.stderr or e.stdout or b"")
        text = out.decode(errors="replace") if isinstance(out, bytes) else out
        last = text.strip().splitlines()[-1] if text.strip() else f"exit status {e.returncode}"
        return f"`{' '.join(map(str, e.cmd))}` failed: {last}"
    if isinstance(e, subprocess.TimeoutExpired):
        return f"`{' '.join(map(str, e.cmd))}` timed out after {e.timeout:.0f} s"
    return f"{type(e).__name__}: {e}"


@contextlib.contextmanager
def simple(trial: Trial) -> Iterator[Trial]:
    """prepare() for a contender that needs no set-up."""
    yield trial

