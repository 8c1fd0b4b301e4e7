"""The container log writer (orchestr.logfile, the supervisor's and the containerd logger's): a block of lines makes the same records, files and rotations as the lines one by
one (the fast path for plain text and the escaping one alike), and a full disk drops and counts them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestr import logfile as logs


def _written(path: Path) -> tuple[list[tuple[str, bytes]], list[int]]:
    """Every record's (stream, data), oldest first, and the size of each file."""
    files = logs.files(str(path))
    records = [logs.parse(line)[:2] for f in files for line in Path(f).read_bytes().splitlines()]
    return records, [os.path.getsize(f) for f in files]


@pytest.mark.parametrize("block, max_size", [
    (b"y\n" * 5000, 10 << 20),  # plain text: the one-replace path
    (b"y\n" * 5000, 5000),  # rotated at the same records as one by one
    (b'he said "hi" \\ \t \x00 \xff\xfe caf\xc3\xa9\n' * 50 + b"plain\n", 3000),  # escapes, bytes that are not UTF-8
    (b"x" * 9000 + b"\n" + b"y\n" * 10, 5000),  # a record bigger than a file, alone in one
])
def test_a_block_of_lines_is_recorded_as_its_lines_one_by_one(tmp_path, block, max_size):
    together, apart = tmp_path / "together.log", tmp_path / "apart.log"
    logs.LogWriter(str(together), max_size, 3).write_lines("stdout", block)
    writer = logs.LogWriter(str(apart), max_size, 3)
    for line in block.splitlines(keepends=True):
        writer.write("stdout", line)
    assert _written(together) == _written(apart)
    assert _written(together)[0][-1] == ("stdout", block.splitlines(keepends=True)[-1])


def test_records_are_what_json_makes_of_them(tmp_path):
    path = tmp_path / "c.log"
    logs.LogWriter(str(path), 1 << 20, 1).write_lines("stderr", b'q"\\\xff\n')
    record = path.read_bytes()
    time = json.loads(record)["time"]
    assert record == (json.dumps({"time": time, "stream": "stderr", "log": 'q"\\\udcff\n'}) + "\n").encode()


def test_a_full_disk_drops_and_counts_a_block_then_says_so(tmp_path):
    writer = logs.LogWriter("/dev/full", 1 << 20, 1)  # every write fails with ENOSPC
    writer.write_lines("stdout", b"a\nb\nc\n")
    assert (writer.lost, writer.unsaid) == (3, 3) and "space" in writer.error
    writer.path = str(tmp_path / "back.log")  # space again
    writer._open()
    writer.write_lines("stdout", b"d\n")
    assert _written(tmp_path / "back.log")[0] == [
        ("stderr", f"orchestr: 3 lines of output were dropped: {writer.error}\n".encode()), ("stdout", b"d\n")]
    assert (writer.lost, writer.unsaid) == (3, 0)
