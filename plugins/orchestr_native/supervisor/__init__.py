"""Supervision: containers outlive the orchestr process that started them.

Design, chosen by measurement. Each running container has its own monitor process: the parent of the
container's init, so it alone gets the exit status; it drains stdout and stderr into the log files, records
exit code, OOM kill and finish time atomically in the container's state dir, and applies the restart policy
(Always, OnFailure) with backoff. Monitors are in their own session, so nothing that happens to an orchestr
process or its terminal reaches them.

Monitors are not started as new interpreters (a bare `python -I -S` costs about 7 MB PSS, 2.7 MB of it
private heap). They are forked from one small host process per state dir, started on demand
(`python -I -S`, no site-packages, only the stdlib and this package's supervision, cgroup, rootfs and
process modules), which imports everything once, calls gc.freeze() so collections never dirty the shared
pages, and then only forks. Each monitor dirties a few hundred KiB of its own; the host's pages are shared by
all of them. Measured on this machine (2 cores, cgroup v1) with 10 running containers, host included: about
1.5 MB PSS per container (see test_supervision_costs_at_most_2mb_pss_per_container); containerd-shim costs
5.8 MB. One host-wide process supervising every container would cost about the same per container but would
take every container's log pipes with it when it dies; with per-container monitors the host can exit or
crash without touching a running container (it exits by itself once no monitor is left and it has been idle).

Entry point: `python -I -S -c BOOT <package dir> host <state root>` or `... exec <container dir>` (see client).
"""

from __future__ import annotations


def main(argv: list[str]) -> None:
    if argv[0] == "host":
        from . import host

        host.serve(argv[1])
    elif argv[0] == "exec":
        from . import enter

        enter.run(argv[1])
    raise SystemExit(f"unknown supervisor command {argv[0]!r}")
