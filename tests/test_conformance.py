"""The conformance kit (orchestr.testing) over native, docker, cri, containerd and the example hostproc plugin, loaded
from its file.

A missing Docker Engine fails the docker half: the kit opens the runtime and its image import cannot reach it.
The cri half runs on the tests' own CRI runtime (a second containerd), which the session starts.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from conftest import ROOT
from orchestr import plugins
from orchestr.testing import host
from orchestr.testing.suite import *  # noqa: F403  (the kit's tests, run here on each runtime below)

CONFORMANCE_RUNTIMES = ["native", "docker", "cri", "containerd", "hostproc"]
EXAMPLE = ROOT / "examples" / "orchestr-hostproc" / "orchestr_hostproc.py"


@pytest.fixture(scope="session")
def orchestr_plugin_manager():
    """The installed plugins and the example, as if it were installed too."""
    spec = importlib.util.spec_from_file_location("orchestr_hostproc_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pm = plugins.new_plugin_manager()
    pm.register(module, name="orchestr_hostproc")
    return pm


@pytest.fixture(scope="session", autouse=True)
def _cri_endpoint(cri_runtime):
    """ORCHESTR_CRI_ENDPOINT names the tests' CRI runtime before the kit opens cri."""


@pytest.fixture(scope="session", autouse=True)
def _containerd_namespace(containerd_namespace):
    """The containerd runtime works in a containerd namespace of the session's own."""


@pytest.fixture(scope="session")
def conformance_target(conformance_target):
    """The kit's target; native's supervisor, which outlives its clients for an idle minute, is ended after."""
    yield conformance_target
    if conformance_target.name == "native":
        from orchestr_native.supervisor.client import SupervisorClient

        SupervisorClient(str(conformance_target.config.state_dir / "native")).ask({"op": "quit-if-idle"})


def test_the_kit_runs_with_one_command():
    proc = subprocess.run(
        [sys.executable, "-m", "orchestr.testing", "native", "-q", "-k", "declares"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    usage = subprocess.run([sys.executable, "-m", "orchestr.testing"], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage: python -m orchestr.testing RUNTIME" in usage.stderr
    unknown = subprocess.run([sys.executable, "-m", "orchestr.testing", "nope"], capture_output=True, text=True)
    assert unknown.returncode == 2 and unknown.stderr.startswith("unknown runtime 'nope' (installed: ")
    assert unknown.stdout == "" and len(unknown.stderr.splitlines()) == 1


def test_limits_are_read_from_cgroup_v2_where_it_is_mounted(tmp_path):
    # This machine runs cgroup v1, so the v2 reading is checked on a made-up /proc and cgroup2 tree.
    proc, unified = tmp_path / "proc", tmp_path / "unified"
    (proc / "self").mkdir(parents=True)
    (proc / "42").mkdir()
    (proc / "self" / "mountinfo").write_text(
        f"30 23 0:26 / {unified} rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
        "31 23 0:27 / /sys/fs/cgroup/name\\040with\\040space rw shared:5 - cgroup cgroup rw,name=systemd\n")
    (proc / "42" / "cgroup").write_text("1:name=systemd:/\n0::/orchestr/abc\n")
    box = unified / "orchestr" / "abc"
    box.mkdir(parents=True)
    (box / "memory.max").write_text("67108864\n")
    (box / "cpu.max").write_text("50000 100000\n")
    (box / "pids.max").write_text("64\n")
    seen = host.limits(42, proc)
    assert (seen.cpus, seen.memory, seen.pids) == (0.5, 64 << 20, 64)
    assert set(seen.files) == {box / "memory.max", box / "cpu.max", box / "pids.max"}
    (box / "memory.max").write_text("max\n")
    (box / "cpu.max").write_text("max 100000\n")
    assert (host.limits(42, proc).memory, host.limits(42, proc).cpus) == (None, None)
