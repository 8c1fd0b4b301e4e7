"""exec -it through a real pty on every runtime (native, docker, swarm, containerd, cri): an interactive sh is typed
commands, their output read back (the terminal's size as the caller's, stdin a terminal), and its exit code becomes the
command line's."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
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


def typed(argv: list[str], env: dict[str, str], keys: bytes, timeout: float = 60) -> tuple[int, bytes]:
    """Exit status and output of argv run on a pty of 30 rows and 100 columns, keys typed once it shows a prompt."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    out, sent = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sent and b"# " in out:  # sh's prompt for root: the terminal is there
                os.write(master, keys)
                sent = True
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


# what is typed: the terminal's size as the command sees it, whether its stdin is a terminal, and an exit code
KEYS = b"stty size; [ -t 0 ] && echo stdin-is-a-tty; echo $((6 * 7)); exit 3\n"


def assert_session(code: int, out: bytes) -> None:
    text = out.decode(errors="replace")
    assert code == 3, text
    assert "30 100\r\n" in text and "stdin-is-a-tty\r\n" in text and "42\r\n" in text, text


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
    code, out = typed([ORCHESTR, "exec", "-it", "-n", namespace, "web-0", "--", "sh"], native_web, KEYS)
    assert_session(code, out)
    # without -i nothing is typed into it; -i alone is refused in one line
    code, out = typed([ORCHESTR, "exec", "-t", "-n", namespace, "web-0", "--", "sh", "-c", "[ -t 1 ] && exit 5"],
                      native_web, b"")
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
        code, out = typed([ORCHESTR, "exec", "-it", "-n", docker_namespace, "web-0", "--", "sh"], env, KEYS)
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
        code, out = typed([ORCHESTR, "exec", "-it", "-n", ns, name, "--", "sh"], env, KEYS)
        assert_session(code, out)
    finally:
        subprocess.run([ORCHESTR, "delete", "-f", spec], env=env, capture_output=True)


def test_containerd_exec_it_runs_an_interactive_shell(cd_ns, state_dir, tmp_path):
    env = {**_env(state_dir), "ORCHESTR_RUNTIME": "containerd"}
    spec = write(tmp_path / "web.yaml", service("web", cd_ns, command=["sh", "-c", TERMINABLE]))
    subprocess.run([ORCHESTR, "apply", "-f", spec], env=env, check=True, capture_output=True)
    code, out = typed([ORCHESTR, "exec", "-it", "-n", cd_ns, "web-0", "--", "sh"], env, KEYS)
    assert_session(code, out)


def test_cri_exec_it_runs_an_interactive_shell_through_the_streaming_server(cri, cri_ns, state_dir, tmp_path):
    env = {**_env(state_dir), "ORCHESTR_RUNTIME": "cri"}
    spec = write(tmp_path / "web.yaml", service("web", cri_ns, command=["sh", "-c", TERMINABLE]))
    subprocess.run([ORCHESTR, "apply", "-f", spec], env=env, check=True, capture_output=True)
    code, out = typed([ORCHESTR, "exec", "-it", "-n", cri_ns, "web-0", "--", "sh"], env, KEYS)
    assert_session(code, out)
    # what CRI's Exec cannot take is refused in one line, before anything runs
    proc = subprocess.run([ORCHESTR, "exec", "-it", "-u", "nobody", "-n", cri_ns, "web-0", "--", "sh"], env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and proc.stderr.startswith("orchestr: the cri runtime cannot give an exec its own "
                                                           "environment, user or working directory"), proc.stderr
