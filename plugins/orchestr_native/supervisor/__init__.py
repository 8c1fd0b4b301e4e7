"""Supervision: containers outlive the orchestr process that started them.

Design, chosen by measurement: one supervisor process per state dir supervises every running container of
it (host.py, with one Monitor per container in monitor.py). It is the parent of each container's init, so
it gets the exit status; it drains stdout and stderr into the log files, records exit code, OOM kill and
finish time atomically in the container's state dir, and applies the restart policy (Always, OnFailure)
with backoff. It runs in its own session, started on demand as `python -I -S` (stdlib and this package
only), so nothing that happens to an orchestr process or its terminal reaches it; it exits once it
supervises nothing and has been idle for a minute. If it is killed, reattach() finds the containers it left
and ends them (their output pipes had no reader any more).

Measured on this machine (2 cores, cgroup v1, Python 3.11), PSS from /proc/<pid>/smaps_rollup with 10
containers running (test_supervision_costs_at_most_2mb_pss_per_container):
  - one supervisor for all containers: about 0.6 MB per container (6.3 MB in all, falling as containers
    are added); the chosen design;
  - one monitor process per container, each forked from a small pre-imported host with gc.freeze() and a
    warm-up: about 2.6 MB per container. CPython writes to the pages of nearly every object it touches
    (reference counts, allocator pools, specialised bytecode), so each monitor ended up with about 1.8 MB
    of private pages however little it did; a fresh interpreter per container costs 7 MB.
  containerd-shim costs 5.8 MB per container here.

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
