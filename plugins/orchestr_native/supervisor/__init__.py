"""Supervision: containers outlive the orchestr process that started them, and a crash of the supervisor.

One supervisor per state dir supervises every running container of it, as two processes:

- the worker (host.py, one Monitor per container in monitor.py; `orchestr-sup` in ps) does the work. It is the
  parent of each container's init, so it gets the exit status; it drains stdout and stderr into the log
  files, records exit code, OOM kill and finish time atomically in the container's state dir, applies the
  restart policy (Always, OnFailure) with backoff, and answers requests on state_dir/native/supervisor.sock.
  It never waits on a container: a start forks the init and returns, the init's report pipe and pidfd join the
  event loop, and the client's start is answered once the init has exec'd its command or failed to, or killed
  after the start timeout (30s) with one line. It reads no file a container controls (the init itself resolves
  the user, and refuses an /etc/passwd that is not a regular file). A log write that fails (a full disk) drops
  the line, counts it in state.json (log_lines_dropped) and says so in the log once space is back; a state
  write that fails is retried every second, and the container stays supervised meanwhile.
- the keeper (keeper.py; `orchestr-keeper`) is the process the client started. It holds the listening socket,
  forks the worker and stays its parent; it is a child subreaper with an oom_score_adj of -999, and runs no
  code a container controls. At each start the worker sends it copies of the output read ends (SCM_RIGHTS on
  a socketpair; released when the output is done), and the init's wait status when the worker reaps it.
  state.json names the keeper as the supervisor.

When the worker dies (kill -9, the OOM killer, a bug), the kernel makes the keeper the parent of the
containers' inits; it reaps those that end and keeps their wait status, and forks a new worker at once (then
after 0.5s, 1s, ... up to 5s while workers keep dying within a minute). The new worker inherits the held
pipes and adopts every container whose state.json says this keeper supervises it: a pidfd for the init (its
exit status comes from the keeper), its output from the held pipes (written meanwhile, it waited in them; a
writer blocks once a pipe's 64 KiB are full), its restart policy and backoff. A start the dead worker had not
settled is ended, and its client told the supervisor closed the connection. Clients only queue on the socket
meanwhile, and `get`, `exec`, `stop` and `apply` see the containers as running all along. What is lost is at
most what the dead worker had read but not yet logged: one read (8 KiB) and an unfinished line per stream,
which a line in each adopted container's log says may be missing (under a steady flood of output, a crash
usually costs that much; a container that writes now and then loses nothing).
Should the keeper die instead, the worker goes on alone and records itself as the supervisor. Should both die
(or the machine reboot), reattach() finds the containers they left and ends them (their output pipes have no
reader any more); the next apply starts them again by policy.

Both start on demand as `python -I -S` (stdlib and this package only), in a session of their own, so nothing
that happens to an orchestr process or its terminal reaches them; the worker exits once it supervises nothing
and has been idle for a minute, and the keeper with it. The keeper imports everything the worker needs before
forking it, so a worker started after an upgrade of orchestr runs the same code as the one that died.

Measured on this machine (2 cores, cgroup v1, Python 3.11), PSS from /proc/<pid>/smaps_rollup with 10
containers running (test_supervision_costs_at_most_2mb_pss_per_container, keeper and worker summed):
  - one supervisor for all containers: about 0.6 MB per container as one process, about 0.9-1.0 MB with the
    keeper (each has about 5 MB: the worker's writes to what they share make most of it private); the
    chosen design;
  - one monitor process per container, each forked from a small pre-imported host with gc.freeze() and a
    warm-up: about 2.6 MB per container. CPython writes to the pages of nearly every object it touches
    (reference counts, allocator pools, specialised bytecode), so each monitor ended up with about 1.8 MB
    of private pages however little it did; a fresh interpreter per container costs 7 MB.
  containerd-shim costs 5.8 MB per container here.

Entry point: `python -I -S -c BOOT <orchestr dir> <package dir> host <state root>` or `... exec <container dir>` (see client).
"""

from __future__ import annotations


def main(argv: list[str]) -> None:
    if argv[0] == "host":
        from . import keeper

        keeper.serve(argv[1])
    elif argv[0] == "exec":
        from . import enter

        enter.run(argv[1])
    raise SystemExit(f"unknown supervisor command {argv[0]!r}")
