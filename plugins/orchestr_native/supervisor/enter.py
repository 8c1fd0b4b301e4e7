"""The exec helper: reads a request on stdin, joins a running container and runs one command in it."""

from __future__ import annotations

import json
import os
import signal
import sys

from .. import cgroups
from ..process import launch
from . import records


def run(directory: str) -> None:
    request = json.loads(sys.stdin.buffer.read() or b"{}")
    if request.get("tty"):  # stdout and stderr are the terminal: the command reads it too
        os.dup2(1, 0)
    else:
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    config = records.read_json(os.path.join(directory, records.CONFIG))
    state = records.read_json(os.path.join(directory, records.STATE)) or {}
    ident = state.get("init")
    if config is None or state.get("status") != "running" or not records.alive(ident):
        sys.stderr.write(f"container {directory} is not running\n")
        os._exit(126)
    proc = dict(config["process"], init=False)
    proc["argv"] = request["argv"]
    proc["env"] = dict(proc["env"], **(request.get("env") or {}))
    if request.get("user"):
        proc["user"] = request["user"]
    if request.get("cwd"):
        proc["cwd"] = request["cwd"]
    try:
        code = launch.enter(config, ident["pid"], cgroups.manager(config["id"]), proc, request.get("timeout"),
                            tty=bool(request.get("tty")))
    except launch.Deadline:
        # dying of SIGALRM says so to the caller: any exit code could be the command's own
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGALRM)
        os._exit(126)  # not reached
    except Exception as e:  # noqa: BLE001 - one line on stderr is the whole report
        sys.stderr.write(f"{e}\n")
        sys.stderr.flush()
        os._exit(126)
    os._exit(code)
