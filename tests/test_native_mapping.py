"""The native runtime's mapping between orchestr's model and its records: pure functions, so no root and no
kernel; what the container then does with its config.json is tested in test_native_containers.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from orchestr.errors import TerminalFailure
from orchestr.model import ContainerSpec, EventAction, Resources, RestartPolicy, State, Volume

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))

from orchestr_native import mapping  # noqa: E402

IMAGE = {"Entrypoint": ["/bin/entry"], "Cmd": ["serve"], "Env": ["PATH=/opt/bin", "LANG=C.UTF-8", "EMPTY="],
         "WorkingDir": "/srv", "User": "nobody"}
SETTINGS = {"log": {"max_size": 4096, "max_files": 2}, "cgroup_version": 1, "start_timeout": 7.0}


def config(spec: ContainerSpec, image: dict = IMAGE, resolv_conf: bool = True) -> dict:
    return mapping.config(spec, image, id="c0ffee", image_id="sha256:abc", layers=["/l/1", "/l/2"],
                          directory=Path("/state/c0ffee"), volumes_dir=Path("/state/volumes"),
                          resolv_conf=resolv_conf, created_at="2026-01-02T03:04:05Z", **SETTINGS)


def test_the_config_takes_the_spec_over_the_image_and_the_runtime_settings():
    spec = ContainerSpec(name="web-0", namespace="shop", image="busybox", labels={"orchestr.service": "web"},
                         args=("--port", "80"), env={"LANG": "en", "KEY": "v"}, user="1000:1000",
                         resources=Resources(cpus=0.5, memory=64 << 20), restart_policy=RestartPolicy.ON_FAILURE,
                         stop_grace_period=3.0, read_only=True, tty=True, init=True, seccomp="unconfined")
    got = config(spec)
    assert got["process"] == {
        "argv": ["/bin/entry", "--port", "80"],  # args replace the image's cmd, not its entrypoint
        "env": {"PATH": "/opt/bin", "LANG": "en", "EMPTY": "", "KEY": "v", "HOSTNAME": "web-0"},
        "cwd": "/srv", "user": "1000:1000", "init": True, "seccomp": False,
    }
    assert got["rootfs"] == {"layers": ["/l/1", "/l/2"], "upper": "/state/c0ffee/upper",
                             "work": "/state/c0ffee/work", "merged": "/state/c0ffee/rootfs", "read_only": True}
    assert got["files"] == {"/etc/hostname": "/state/c0ffee/hostname", "/etc/hosts": "/state/c0ffee/hosts",
                            "/etc/resolv.conf": "/state/c0ffee/resolv.conf"}
    assert got["resources"] == {"cpus": 0.5, "memory": 64 << 20, "pids": None}
    assert (got["id"], got["image_id"], got["hostname"], got["network"], got["net"]) == (
        "c0ffee", "sha256:abc", "web-0", "bridge", None)
    assert (got["restart_policy"], got["stop_grace_period"], got["tty"]) == ("OnFailure", 3.0, True)
    assert {k: got[k] for k in SETTINGS} == SETTINGS
    assert got["labels"] == {"orchestr.service": "web"} and got["created_at"] == "2026-01-02T03:04:05Z"
    assert json.loads(json.dumps(got)) == got  # what create writes is plain JSON


def test_an_image_without_defaults_gets_the_standard_path_root_dir_and_the_image_user():
    spec = ContainerSpec(name="job-0", namespace="ns", image="busybox", command=("true",), network="none")
    got = config(spec, {})
    assert got["process"]["env"] == {"PATH": mapping.DEFAULT_PATH, "HOSTNAME": "job-0"}
    assert (got["process"]["argv"], got["process"]["cwd"], got["process"]["user"]) == (["true"], "/", "")
    assert config(spec, {"User": "nobody"})["process"]["user"] == "nobody"


@pytest.mark.parametrize(("network", "resolv_conf", "shared"), [
    ("bridge", False, True),  # the network set-up writes one of its own
    ("host", True, True), ("host", False, False), ("none", True, False),
])
def test_resolv_conf_is_the_containers_own_where_it_has_a_network(network, resolv_conf, shared):
    spec = ContainerSpec(name="n-0", namespace="ns", image="busybox", network=network)
    assert ("/etc/resolv.conf" in config(spec, resolv_conf=resolv_conf)["files"]) is shared


def test_volumes_become_mounts_and_named_ones_live_in_the_namespaces_directory():
    spec = ContainerSpec(name="v-0", namespace="shop", image="busybox", volumes=(
        Volume("bind", "/data", source="/srv/data", read_only=True),
        Volume("bind", "/host", source="/", allow_host_root=True),
        Volume("volume", "/cache", source="cache"),
        Volume("tmpfs", "/tmp"), Volume("tmpfs", "/run", size=1 << 20),
    ))
    assert config(spec)["mounts"] == [
        {"type": "bind", "source": "/srv/data", "target": "/data", "read_only": True, "allow_host_root": False},
        {"type": "bind", "source": "/", "target": "/host", "read_only": False, "allow_host_root": True},
        {"type": "volume", "source": "/state/volumes/shop_cache", "target": "/cache", "read_only": False,
         "allow_host_root": False},
        {"type": "tmpfs", "source": None, "target": "/tmp", "read_only": False, "size": 64 << 20},
        {"type": "tmpfs", "source": None, "target": "/run", "read_only": False, "size": 1 << 20},
    ]


@pytest.mark.parametrize("target", ["/proc", "/proc/sys"])
def test_nothing_is_mounted_over_or_inside_proc(target):
    spec = ContainerSpec(name="p-0", namespace="ns", image="busybox", volumes=(Volume("tmpfs", target),))
    with pytest.raises(TerminalFailure, match=f"container p-0: volume '{target}': nothing may be mounted over"):
        config(spec)


def test_resources_are_read_from_todays_records_and_from_older_ones():
    assert mapping.resources({"resources": {"cpus": 1.5, "memory": None, "pids": 9}}) == Resources(1.5, None, 9)
    assert mapping.resources({"limits": {"cpus": None, "memory": 1 << 20, "pids": None}}) == Resources(memory=1 << 20)


def test_an_update_changes_only_the_limits_it_names():
    old = Resources(cpus=0.5, memory=32 << 20, pids=20)
    assert mapping.updated(old, Resources(memory=16 << 20)) == Resources(cpus=0.5, memory=16 << 20, pids=20)
    assert mapping.updated(old, Resources()) == old


def test_log_and_event_lines_are_read_back_and_torn_ones_left_out():
    line = mapping.log_line(b'{"time": "2026-01-02T03:04:05.000000001Z", "stream": "stderr", "log": "oops\\n"}')
    assert (line.stream, line.data, line.time) == ("stderr", b"oops\n", "2026-01-02T03:04:05.000000001Z")
    event = mapping.event(b'{"id": "c0ffee", "name": "web-0", "namespace": "shop", "action": "die", '
                          b'"state": "exited", "exit_code": 3, "time": "2026-01-02T03:04:05Z"}')
    assert (event.runtime, event.action, event.state, event.exit_code) == ("native", EventAction.DIE, State.EXITED, 3)
    assert mapping.log_line(b'{"stream": "stdout", "lo') is None and mapping.event(b'{"id": "c0ffee"}') is None
