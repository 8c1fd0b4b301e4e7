"""The native runtime's cgroup v2 manager.

This host runs cgroup v1, so the v2 controllers (cpu, io, memory, pids) cannot be used here for real.
Limits, OOM counting and resource accounting are therefore tested against a fake cgroupfs tree in a temporary
directory: the files a v2 kernel shows (cgroup.controllers, cgroup.subtree_control, cgroup.procs, cpu.max,
cpu.stat, io.stat, memory.current, memory.max, memory.stat, memory.swap.max, memory.events, pids.current,
pids.max, cgroup.freeze, cgroup.events), with the kernel's defaults, and a small thread playing the kernel's part for freezing. What does run for real: version
detection by statfs, and freezing, which v2 does without any controller, in the host's cgroup2 mount at
/sys/fs/cgroup/unified.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from orchestr.model import Resources

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))

from orchestr_native import cgroups  # noqa: E402
from orchestr_native.cgroups.v2.manager import V2Manager  # noqa: E402

UNIFIED = "/sys/fs/cgroup/unified"
KERNEL_DEFAULTS = {  # what a v2 kernel shows in a new cgroup with cpu, memory and pids enabled
    "cgroup.procs": "", "cgroup.freeze": "0", "cgroup.events": "populated 0\nfrozen 0\n",
    "cpu.max": "max 100000\n", "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
    "memory.max": "max\n", "memory.swap.max": "max\n", "memory.current": "0\n", "memory.stat": "anon 0\nfile 0\n",
    "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n", "pids.max": "max\n",
    "pids.current": "0\n", "io.stat": "",
}


@pytest.fixture
def fake_root(tmp_path) -> Path:
    """A cgroup2 root as the kernel shows it before orchestr makes anything."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "cgroup.procs").write_text("1\n")
    return root


def fake_cgroup(root: Path, id: str) -> Path:
    """What mkdir of orchestr/<id> makes in a real cgroup2 file system: the directory and its files."""
    path = root / "orchestr" / id
    path.mkdir(parents=True)
    for name, value in KERNEL_DEFAULTS.items():
        (path / name).write_text(value)
    return path


def test_version_is_detected_by_statfs():
    assert cgroups.version("/sys/fs/cgroup") == 1  # this host: a tmpfs of v1 hierarchies
    if not os.path.ismount(UNIFIED):
        pytest.skip(f"no cgroup2 mount at {UNIFIED}")
    assert cgroups.version(UNIFIED) == 2
    assert isinstance(cgroups.manager("x", UNIFIED), V2Manager)


def test_limits_are_written_and_controllers_enabled_down_the_tree(fake_root):
    path = fake_cgroup(fake_root, "c1")
    manager = cgroups.manager("c1", str(fake_root), cgroup_version=2)
    manager.create(Resources(cpus=0.5, memory=16 << 20, pids=64))
    assert (fake_root / "cgroup.subtree_control").read_text() == "+cpu +io +memory +pids"
    assert (fake_root / "orchestr" / "cgroup.subtree_control").read_text() == "+cpu +io +memory +pids"
    assert (path / "cpu.max").read_text() == "50000 100000"
    assert (path / "memory.max").read_text() == str(16 << 20)
    assert (path / "memory.swap.max").read_text() == "0"
    assert (path / "pids.max").read_text() == "64"


def test_unlimited_resources_leave_the_kernel_defaults(fake_root):
    path = fake_cgroup(fake_root, "c2")
    cgroups.manager("c2", str(fake_root), cgroup_version=2).create(Resources())
    for name in ("cpu.max", "memory.max", "memory.swap.max", "pids.max"):
        assert (path / name).read_text() == KERNEL_DEFAULTS[name], name


def test_a_missing_controller_is_named(fake_root):
    (fake_root / "cgroup.controllers").write_text("cpu io\n")
    fake_cgroup(fake_root, "c3")
    with pytest.raises(OSError, match="controllers memory, pids are not available"):
        cgroups.manager("c3", str(fake_root), cgroup_version=2).create(Resources(memory=1 << 20, pids=10))


def test_oom_kills_procs_and_cpu_usage_are_read_from_the_kernel_files(fake_root):
    path = fake_cgroup(fake_root, "c4")
    manager = cgroups.manager("c4", str(fake_root), cgroup_version=2)
    assert manager.oom_kills() == 0
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n")
    (path / "cgroup.procs").write_text("12\n34\n")
    (path / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n")
    assert manager.oom_kills() == 1
    assert manager.procs() == [12, 34]
    assert manager.cpu_usage_ns() == 1_500_000_000


def test_usage_is_read_from_the_kernel_files(fake_root):
    path = fake_cgroup(fake_root, "c7")
    manager = cgroups.manager("c7", str(fake_root), cgroup_version=2)
    assert manager.usage() == {"cpu_ns": 0, "memory": 0, "memory_limit": None, "pids": 0, "block_read": 0,
                               "block_write": 0}
    (path / "cpu.stat").write_text("usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n")
    (path / "memory.current").write_text("10485760\n")
    (path / "memory.stat").write_text("anon 6291456\nfile 4194304\ninactive_file 2097152\nactive_file 2097152\n")
    (path / "memory.max").write_text("67108864\n")
    (path / "pids.current").write_text("3\n")
    (path / "io.stat").write_text("8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"
                                  "8:16 rbytes=1000 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n")
    assert manager.usage() == {"cpu_ns": 2_500_000, "memory": 10485760 - 2097152, "memory_limit": 64 << 20,
                               "pids": 3, "block_read": 5096, "block_write": 8192}
    (path / "io.stat").unlink()  # the io controller not enabled for it
    assert (manager.usage()["block_read"], manager.usage()["block_write"]) == (None, None)


def test_freeze_waits_for_the_kernel_to_report_frozen(fake_root):
    path = fake_cgroup(fake_root, "c5")
    manager = cgroups.manager("c5", str(fake_root), cgroup_version=2)
    stop = threading.Event()

    def kernel():  # reports the state asked for in cgroup.freeze, a little later, as the kernel does
        while not stop.wait(0.01):
            want = (path / "cgroup.freeze").read_text().strip()
            (path / "cgroup.events").write_text(f"populated 1\nfrozen {want}\n")

    thread = threading.Thread(target=kernel)
    thread.start()
    try:
        manager.freeze()
        assert manager.frozen()
        manager.thaw()
        assert (path / "cgroup.freeze").read_text() == "0"
    finally:
        stop.set()
        thread.join()


def test_freeze_that_never_completes_times_out_and_thaws(fake_root):
    path = fake_cgroup(fake_root, "c6")
    from orchestr_native.cgroups.v2 import freezer

    with pytest.raises(TimeoutError, match="did not freeze"):
        freezer.freeze(str(path), timeout=0.2)
    assert (path / "cgroup.freeze").read_text() == "0"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_freezing_a_real_process_in_the_hosts_cgroup2_mount():
    if not os.path.ismount(UNIFIED) or cgroups.version(UNIFIED) != 2:
        pytest.skip(f"no cgroup2 mount at {UNIFIED}")
    id = f"test-{uuid.uuid4().hex[:12]}"
    manager = cgroups.manager(id, UNIFIED)
    manager.create(Resources())  # no controller is needed to freeze
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        Path(UNIFIED, "orchestr", id, "cgroup.procs").write_text(str(sleeper.pid))
        assert manager.procs() == [sleeper.pid]
        manager.freeze()
        assert manager.frozen()
        assert "frozen 1" in Path(UNIFIED, "orchestr", id, "cgroup.events").read_text()
        manager.thaw()
        assert not manager.frozen()
        manager.freeze()  # removal must work on a frozen cgroup too
        manager.remove()
        assert sleeper.wait(timeout=10) == -9
        assert not manager.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
        if manager.exists():
            manager.remove()
