"""cgroup v2 io: bytes read from and written to block devices, from io.stat."""

from __future__ import annotations

import os


def transferred(path: str) -> tuple[int | None, int | None]:
    """(read, written) over every device; None when the io controller is not enabled for the cgroup."""
    try:
        with open(os.path.join(path, "io.stat")) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None, None
    read = written = 0
    for line in lines:  # "8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0"
        for field in line.split()[1:]:
            key, _, value = field.partition("=")
            if key == "rbytes":
                read += int(value)
            elif key == "wbytes":
                written += int(value)
    return read, written
