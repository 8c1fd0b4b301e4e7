"""The pull progress printer on its own, with a clock of the test's: what a terminal gets (redraws, bars, rates,
throttling, lines printed above the block) and what a pipe gets; and the docker engine's messages as PullProgress."""

from __future__ import annotations

import io

import pytest

from orchestr.model import PullProgress, PullStatus
from orchestr.progress import PullPrinter

REF = "reg.example:5000/app:1"
A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


class Screen(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def colour_terminal(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")


def report(layer: str | None, status: PullStatus, current: int = 0, total: int | None = None) -> PullProgress:
    return PullProgress(REF, layer, status, current, total)


def test_a_terminal_gets_a_block_redrawn_in_place_with_bars_bytes_and_rates():
    screen, clock = Screen(), Clock()
    with PullPrinter(screen, clock=clock) as progress:
        progress(report(None, PullStatus.RESOLVING))
        assert screen.getvalue() == ""  # whole-image reports draw nothing of their own
        progress(report(A, PullStatus.WAITING, 0, 4_000_000))
        progress(report(B, PullStatus.EXISTS, 1_000, 1_000))
        progress(report(A, PullStatus.DOWNLOADING, 1_000_000, 4_000_000))
        drawn = screen.getvalue()
        clock.now += 0.05
        progress(report(A, PullStatus.DOWNLOADING, 2_000_000, 4_000_000))
        assert screen.getvalue() == drawn  # the same status within REDRAW_EVERY: not drawn again
        clock.now += 1.45
        progress(report(A, PullStatus.DOWNLOADING, 4_000_000, 4_000_000))  # the last bytes always show
        last = screen.getvalue()[len(drawn):]
        assert last == ("\x1b[3F\x1b[J" f"{REF}:\n"
                        "  aaaaaaaaaaaa: Downloading [====================] 4.0MB/4.0MB 2.0MB/s\n"
                        "  bbbbbbbbbbbb: Exists      1.0kB\n")
        assert "[=====>              ] 1.0MB/4.0MB\n" in drawn  # a quarter, and no rate from one report yet
        mark = len(screen.getvalue())
        progress.above(lambda: screen.write("  done     create ns/web-0\n"))
        assert screen.getvalue()[mark:].startswith("\x1b[3F\x1b[J  done     create ns/web-0\n" f"{REF}:\n")
        progress(report(A, PullStatus.DONE, 4_000_000, 4_000_000))
        mark = len(screen.getvalue())
        progress(report(None, PullStatus.DONE))  # the image is whole: its block stays, above anything after
        assert screen.getvalue()[mark:] == ("\x1b[3F\x1b[J" f"{REF}:\n"
                                            "  aaaaaaaaaaaa: Done        4.0MB\n"
                                            "  bbbbbbbbbbbb: Exists      1.0kB\n")
        assert progress.layers == {}
        before_the_end = screen.getvalue()
    assert screen.getvalue() == before_the_end  # nothing left to draw at the end


def test_a_pipe_gets_one_line_per_layer_done_and_quiet_gets_nothing():
    for stream, quiet, expected in ((io.StringIO(), False, f"{REF}: bbbbbbbbbbbb: Exists      1.0kB\n"
                                                           f"{REF}: aaaaaaaaaaaa: Done        4.0MB\n"),
                                    (Screen(), True, ""), (io.StringIO(), True, "")):
        with PullPrinter(stream, quiet=quiet) as progress:
            for r in (report(None, PullStatus.RESOLVING), report(A, PullStatus.WAITING, 0, 4_000_000),
                      report(B, PullStatus.EXISTS, 1_000, 1_000), report(A, PullStatus.DOWNLOADING, 5, 4_000_000),
                      # a layer finished once is printed once, whatever its runtime reports after
                      report(B, PullStatus.EXTRACTING, 1_000, 1_000), report(B, PullStatus.DONE, 1_000, 1_000),
                      report(A, PullStatus.DONE, 4_000_000, 4_000_000), report(A, PullStatus.DONE, 4_000_000),
                      report(None, PullStatus.DONE)):
                progress(r)
        assert stream.getvalue() == expected


def test_a_dumb_terminal_gets_the_plain_lines(monkeypatch):
    monkeypatch.setenv("TERM", "dumb")
    screen = Screen()
    with PullPrinter(screen) as progress:
        progress(report(A, PullStatus.DOWNLOADING, 5, 10))
        progress(report(A, PullStatus.DONE, 10, 10))
    assert screen.getvalue() == f"{REF}: aaaaaaaaaaaa: Done        10B\n"


def test_the_docker_engines_messages_become_pull_progress():
    from orchestr_docker import mapping

    assert mapping.progress(REF, {"status": "Pulling from app", "id": "1"}) is None
    assert mapping.progress(REF, {"status": "Digest: sha256:" + "c" * 64}) is None
    assert mapping.progress(REF, {"status": "Downloading", "id": "aaaaaaaaaaaa",
                                  "progressDetail": {"current": 5, "total": 10}}) == PullProgress(
        REF, "aaaaaaaaaaaa", PullStatus.DOWNLOADING, 5, 10)
    assert mapping.progress(REF, {"status": "Already exists", "id": "bbbbbbbbbbbb", "progressDetail": {}}) == \
        PullProgress(REF, "bbbbbbbbbbbb", PullStatus.EXISTS)
