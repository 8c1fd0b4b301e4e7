"""exec -it through a real pty on every runtime (native, docker, swarm, containerd, cri): an interactive sh is typed
commands, their output read back (the terminal's size as the caller's, stdin a terminal), and its exit code becomes the
command line's."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time

import pytest
from test_native_cli import ORCHESTR, TERMINABLE, _env, assert_nothing_left, service, write
from test_containerd_cli import cd_ns, containerd_image  # noqa: F401 - fixtures: the image, a namespace checked after
from test_cri_cli import cri, cri_ns  # noqa: F401 - fixtures: the tests' CRI runtime, a namespace checked after
from test_swarm import ns, swarm_engine  # noqa: F401 - fixtures: a swarm manager, a namespace cleaned after

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the native runtime needs root")


def typed(argv: list[str], env: dict[str, str], steps: list[tuple[bytes, tuple[int, int] | None, bytes]] = (),
          timeout: float = 60) -> tuple[int, bytes]:
    """Exit status and output of argv run on a pty of 30 rows and 100 columns. Each step waits for its marker in
    the output (past the last step's), then resizes the pty (and tells argv, as a terminal would) when it gives a
    size, then types its keys."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    out, seen, todo = b"", 0, list(steps)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if todo and (at := out.find(todo[0][0], seen)) >= 0:
                marker, size, keys = todo.pop(0)
                seen = at + len(marker)
                if size is not None:
                    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
                    os.kill(proc.pid, signal.SIGWINCH)
                os.write(master, keys)
            if select.select([master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the command line has exited and closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=30), out
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


# What is typed into sh: the terminal's size as the command sees it, at the start (the caller's) and after the
# caller's window changed; whether its stdin is a terminal; a sum; and an exit code for the command line's.
SESSION = [
    (b"# ", None, b"stty size\n"),  # sh's prompt for root: the terminal is there
    (b"30 100\r\n", (40, 120),
     b'while [ "$(stty size)" != "40 120" ]; do sleep 0.1; done; stty size; [ -t 0 ] && echo stdin-is-a-tty; '
     b"echo $((6 * 7)); exit 3\n"),
]


def assert_session(code: int, out: bytes) -> None:
    text = out.decode(errors="replace")
    assert code == 3, text
    assert "40 120\r\n" in text and "stdin-is-a-tty\r\n" in text and "42\r\n" in text, text


@pytest.fixture
def native_web(namespace, state_dir, busybox_archive, tmp_path):
    env = _env(state_dir)
    subprocess.run([ORCHESTR, "images", "import", str(busybox_archive)], env=env, check=True, capture_output=True)
    spec = write(tmp_path / "web.yaml", service("web", namespace, command=["sh", "-c", TERMINABLE]))
    subprocess.run([ORCHESTR, "apply", "-f", spec], env=env, check=True, capture_output=True)
    yield env
    subprocess.run([ORCHESTR, "delete", "-f", spec], env=env, capture_output=True)
    assert_nothing_left(namespace, state_dir)


def test_native_exec_it_runs_an_interactive_shell(native_web, namespace):
    code, out = typed([ORCHESTR, "exec", "-it", "-n", namespace, "web-0", "--", "sh"], native_web, SESSION)
    assert_session(code, out)
    # without -i nothing is typed into it; -i alone is refused in one line
    code, out = typed([ORCHESTR, "exec", "-t", "-n", namespace, "web-0", "--", "sh", "-c", "[ -t 1 ] && exit 5"],
                      native_web)
    assert code == 5, out
    proc = subprocess.run([ORCHESTR, "exec", "-i", "-n", namespace, "web-0", "--", "sh"], env=native_web,
                          capture_output=True, text=True)
    assert (proc.returncode, proc.stderr) == (
        1, "orchestr: exec -i needs -t here: the command's input comes through a terminal (exec -it)\n")


def test_docker_exec_it_runs_an_interactive_shell(docker_namespace, state_dir, tmp_path):
    env = {**_env(state_dir), "ORCHESTR_RUNTIME": "docker"}
    spec = write(tmp_path / "web.yaml", service("web", docker_namespace, command=["sh", "-c", TERMINABLE]))
    subprocess.run([ORCHESTR, "apply", "-f", spec], env=env, check=True, capture_output=True)
    try:
        code, out = typed([ORCHESTR, "exec", "-it", "-n", docker_namespace, "web-0", "--", "sh"], env, SESSION)
        assert_session(code, out)
    finally:
        subprocess.run([ORCHESTR, "delete", "-f", spec], env=env, capture_output=True)


def test_swarm_exec_it_runs_an_interactive_shell_in_a_tasks_container(ns, state_dir, tmp_path):
    env = {**_env(state_dir), "ORCHESTR_RUNTIME": "swarm"}
    spec = write(tmp_path / "web.yaml", service("web", ns, command=["sh", "-c", TERMINABLE]).replace(
        "  network: none\n", ""))  # a swarm service is on its namespace's overlay network
    subprocess.run([ORCHESTR, "apply", "-f", spec], env=env, check=True, capture_output=True)
    try:
        deadline = time.monotonic() + 60
        while '"running"' not in (got := subprocess.run([ORCHESTR, "get", "-n", ns, "-o", "json"], env=env,
                                                          capture_output=True, text=True).stdout):
            assert time.monotonic() < deadline, got
            time.sleep(0.2)
        [name] = [c["name"] for c in json.loads(got)]
        code, out = typed([ORCHESTR, "exec", "-it", "-n", ns, name, "--", "sh"], env, SESSION)
        assert_session(code, out)
    finally:
        subprocess.run([ORCHESTR, "delete", "-f", spec], env=env, capture_output=True)


def test_containerd_exec_it_runs_an_interactive_shell(cd_ns, state_dir, tmp_path):
    env = {**_env(state_dir), "ORCHESTR_RUNTIME": "containerd"}
    spec = write(tmp_path / "web.yaml", service("web", cd_ns, command=["sh", "-c", TERMINABLE]))
    subprocess.run([ORCHESTR, "apply", "-f", spec], env=env, check=True, capture_output=True)
    code, out = typed([ORCHESTR, "exec", "-it", "-n", cd_ns, "web-0", "--", "sh"], env, SESSION)
    assert_session(code, out)


def test_cri_exec_it_runs_an_interactive_shell_through_the_streaming_server(cri, cri_ns, state_dir, tmp_path):
    env = {**_env(state_dir), "ORCHESTR_RUNTIME": "cri"}
    spec = write(tmp_path / "web.yaml", service("web", cri_ns, command=["sh", "-c", TERMINABLE]))
    subprocess.run([ORCHESTR, "apply", "-f", spec], env=env, check=True, capture_output=True)
    code, out = typed([ORCHESTR, "exec", "-it", "-n", cri_ns, "web-0", "--", "sh"], env, SESSION)
    assert_session(code, out)
    # what CRI's Exec cannot take is refused in one line, before anything runs
    proc = subprocess.run([ORCHESTR, "exec", "-it", "-u", "nobody", "-n", cri_ns, "web-0", "--", "sh"], env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and proc.stderr.startswith("orchestr: the cri runtime cannot give an exec its own "
                                                           "environment, user or working directory"), proc.stderr
