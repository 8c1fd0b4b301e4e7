"""cgroup v1 blkio: bytes read from and written to block devices, as the throttling layer counts them."""

from __future__ import annotations

import os


def transferred(path: str) -> tuple[int | None, int | None]:
    """(read, written) over every device; the throttle counters see all I/O whatever the I/O scheduler."""
    try:
        with open(os.path.join(path, "blkio.throttle.io_service_bytes")) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None, None
    totals = {"Read": 0, "Write": 0}
    for line in lines:
        fields = line.split()  # "8:0 Read 4096", and a last "Total 4096"
        if len(fields) == 3 and fields[1] in totals:
            totals[fields[1]] += int(fields[2])
    return totals["Read"], totals["Write"]
