"""The one reader that follows container logs and the event log as they grow and rotate: real files, with the
writer's moves made where the reader would sleep, so every interleaving tested is exact (no clock)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))

from orchestr_native import follow, steps as verbs  # noqa: E402


def parse(raw: bytes) -> str | None:
    return None if raw == b"torn" else raw.decode()


def drive(steps, moves: Iterable[Callable[[], None]]) -> list[str]:
    """The items the steps yield, making the writer's next move at each sleep; once the moves are all made and
    the reader sleeps again, it is closed."""
    moves, out = iter(moves), []
    with contextlib.closing(steps):
        for step in steps:
            if not isinstance(step, (int, float, verbs.Wake)):
                out.append(step)
            elif (move := next(moves, None)) is None:
                break
            else:
                move()
    return out


def append(path: Path, data: bytes) -> Callable[[], None]:
    def move() -> None:
        with open(path, "ab") as f:
            f.write(data)
    return move


def test_a_log_is_followed_across_its_rotation_to_its_end(tmp_path):
    log = tmp_path / "container.log"
    log.write_bytes(b"a\ntorn\npart")
    ended = []

    def rotate() -> None:
        with open(log, "ab") as old:  # a writer that holds the old file writes on after the rename
            old.write(b"ial\nb\n")
            os.rename(log, f"{log}.1")
            log.write_bytes(b"d\n")
            old.write(b"c\n")

    steps = follow.lines(str(log), open(log, "rb"), parse, lambda: bool(ended))
    got = drive(steps, [rotate, append(log, b"e\nlast"), lambda: ended.append(True)])
    assert got == ["a", "partial", "b", "c", "d", "e", "last"]  # the old file drained first; the end unfinished


def test_the_event_log_is_followed_from_before_it_exists_and_between_a_rotation_and_the_next_write(tmp_path):
    events = tmp_path / "events.jsonl"

    def rotate() -> None:
        os.rename(events, f"{events}.1")  # the next event makes the new file

    steps = follow.lines(str(events), None, parse)
    got = drive(steps, [append(events, b"x\n"), rotate, lambda: None, append(events, b"y\nz")])
    assert got == ["x", "y"]  # z is not whole yet, and an event log never ends


def test_a_follower_waits_on_its_directory_and_wakes_at_a_write(tmp_path):
    log = tmp_path / "container.log"
    log.write_bytes(b"")
    steps = follow.lines(str(log), open(log, "rb"), parse)
    with contextlib.closing(steps):
        # its first looks are timed ones: a follower of a container that ends at once takes no watch
        first = [next(steps)] + [steps.send(None) for _ in range(follow.EAGER_LOOKS - 2)]
        assert all(isinstance(delay, float) for delay in first)
        wait = steps.send(None)
        assert isinstance(wait, verbs.Wake) and not _readable(wait.fd)
        append(log, b"x\n")()
        assert _readable(wait.fd)  # the driver's wait ends here, not at the delay's end
        assert steps.send(None) == "x"


def _readable(fd: int) -> bool:
    import select

    return bool(select.select([fd], [], [], 0)[0])


def test_a_log_with_no_file_yet_ends_with_nothing_once_ended(tmp_path):
    assert drive(follow.lines(str(tmp_path / "container.log"), None, parse, lambda: True), []) == []
