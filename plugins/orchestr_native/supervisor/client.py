"""The orchestr side of supervision: starts the supervisor (its keeper, which forks the worker) on demand and
sends it requests."""

from __future__ import annotations

import fcntl
import json
import os
import select
import socket
import sys
from collections.abc import Sequence

import orchestr
from orchestr.config import private, private_dir

from .records import SOCKET

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORCHESTR_DIR = os.path.dirname(os.path.abspath(orchestr.__file__))
# Runs a supervision entry point in `python -I -S` without executing the plugin package's __init__ (and so
# without orchestr's own imports): the package, and orchestr for its log format (orchestr.logfile, standard
# library only), are registered as bare modules with the right __path__.
BOOT = (
    "import sys,types\nfor n,d in (('orchestr',sys.argv[1]),('orchestr_native',sys.argv[2])):\n"
    " p=types.ModuleType(n);p.__path__=[d];sys.modules[n]=p\n"
    "from orchestr_native.supervisor import main;main(sys.argv[3:])"
)
_NOT_LISTENING = (FileNotFoundError, ConnectionRefusedError)
START_TIMEOUT = 60.0


def command(*args: str) -> list[str]:
    return [sys.executable, "-I", "-S", "-c", BOOT, ORCHESTR_DIR, PACKAGE_DIR, *args]


class SupervisorClient:
    def __init__(self, root: str):
        self.root = root
        self.path = os.path.join(root, SOCKET)

    def request(self, message: dict, timeout: float = 60.0, fds: Sequence[int] = ()) -> dict:
        """Sends message, and fds with it, to the host, starting the host first when none listens; returns its
        reply. A reply that brings a file descriptor has it under "fd"; the caller owns it."""
        try:
            return self._send(message, timeout, fds)
        except _NOT_LISTENING:
            self._spawn()
            return self._send(message, timeout, fds)

    def ask(self, message: dict) -> dict | None:
        """Sends message only if a host is listening."""
        try:
            return self._send(message, 10.0)
        except (*_NOT_LISTENING, ConnectionResetError, EOFError):
            return None

    def _send(self, message: dict, timeout: float, fds: Sequence[int] = ()) -> dict:
        received: list[int] = []
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
            s.settimeout(timeout)
            s.connect(self.path)
            payload = json.dumps(message).encode() + b"\n"
            if fds:
                sent = socket.send_fds(s, [payload], list(fds))
                payload = payload[sent:]
            s.sendall(payload)
            data = b""
            try:
                while not data.endswith(b"\n"):
                    chunk, got, _, _ = socket.recv_fds(s, 65536, 1)
                    received += got
                    for fd in got:  # recv_fds takes no MSG_CMSG_CLOEXEC: no child may inherit them
                        os.set_inheritable(fd, False)
                    if not chunk:
                        raise EOFError(f"the supervisor closed the connection; see {self.root}/supervisor.log")
                    data += chunk
            except BaseException:
                for fd in received:
                    os.close(fd)
                raise
        try:
            reply = json.loads(data)
        except ValueError:
            for fd in received:
                os.close(fd)
            raise EOFError(f"the supervisor answered garbage; see {self.root}/supervisor.log") from None
        if received:
            reply["fd"] = received[0]
            for fd in received[1:]:
                os.close(fd)
        return reply

    def _spawn(self) -> None:
        private_dir(self.root)
        with open(os.path.join(self.root, "supervisor.lock"), "w", opener=private) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._send({"op": "ping"}, 10.0)
                return  # another orchestr process started it meanwhile
            except (*_NOT_LISTENING, ConnectionResetError, EOFError):
                pass
            import subprocess  # here: a command whose supervisor already runs, the usual case, needs none of it

            with open(os.path.join(self.root, "supervisor.log"), "ab", opener=private) as log:
                proc = subprocess.Popen(
                    command("host", self.root), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                    start_new_session=True,
                )
            # Its first process exits once the socket listens. Popen.wait(timeout) would notice that only at its
            # next poll (they double: 32, 64 ms...); a pidfd turns readable at once.
            pidfd = os.pidfd_open(proc.pid)
            try:
                exited = select.select([pidfd], [], [], START_TIMEOUT)[0]
            finally:
                os.close(pidfd)
            if not exited:
                proc.kill()
                proc.wait()
                raise OSError(f"the supervisor did not start within {START_TIMEOUT:g}s; see {self.root}/supervisor.log")
            if proc.wait() != 0:
                raise OSError(f"the supervisor did not start (exit {proc.returncode}); see {self.root}/supervisor.log")
