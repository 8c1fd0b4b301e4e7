"""The containerd runtime's pure parts: the OCI runtime spec made from a ContainerSpec, users from an image's files,
chain ids, container ids, the generated messages' wire names."""

from __future__ import annotations

import pytest

from orchestr.errors import TerminalFailure
from orchestr.model import ContainerSpec, Resources, Volume
from orchestr_containerd import spec as specs
from orchestr_containerd.images import chain_ids, sha256
from orchestr_containerd.runtime import PAYLOADS, container_id

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1000:\nstaff:x:50:app\n"


def make(**fields) -> dict:
    spec = ContainerSpec(name="web-0", namespace="shop", image="busybox", command=("sh",), **fields)
    return specs.runtime_spec(spec, {"Env": ["PATH=/bin", "FROM_IMAGE=1"], "WorkingDir": "/srv"}, id="shop_web-0",
                              user=(0, 0, [0]), files={"/etc/hosts": "/x/hosts"}, netns=None,
                              cgroups_path="/orchestr/shop_web-0", volumes_dir="/v", nofile=4096)


def test_limits_go_to_linux_resources_and_memory_caps_swap():
    resources = make(resources=Resources(cpus=0.5, memory=64 << 20, pids=50))["linux"]["resources"]
    assert resources["cpu"] == {"quota": 50000, "period": 100000}
    assert resources["memory"] == {"limit": 64 << 20, "swap": 64 << 20}
    assert resources["pids"] == {"limit": 50}
    assert resources["devices"][0] == {"allow": False, "access": "rwm"}
    assert "memory" not in make()["linux"]["resources"]


def test_the_process_runs_confined():
    config = make(env={"FROM_SPEC": "2"})
    process = config["process"]
    assert process["args"] == ["sh"] and process["cwd"] == "/srv" and process["noNewPrivileges"]
    assert {"PATH=/bin", "FROM_IMAGE=1", "FROM_SPEC=2", "HOSTNAME=web-0"} <= set(process["env"])
    assert "inheritable" not in process["capabilities"] and "ambient" not in process["capabilities"]
    assert "CAP_SYS_ADMIN" not in process["capabilities"]["bounding"]
    assert process["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096}]
    assert "/proc/kcore" in config["linux"]["maskedPaths"] and "/proc/sys" in config["linux"]["readonlyPaths"]
    seccomp = config["linux"].get("seccomp")
    if seccomp is not None:  # x86_64 only, as native's filter
        refused = seccomp["syscalls"][0]
        assert {"mount", "unshare", "bpf", "keyctl"} <= set(refused["names"]) and refused["errnoRet"] == 1
    assert "seccomp" not in make(seccomp="unconfined")["linux"]
    assert {"type": "network"} in config["linux"]["namespaces"]


def test_volumes_become_mounts():
    mounts = {m["destination"]: m for m in make(volumes=(
        Volume(type="bind", source="/data", target="/data", read_only=True),
        Volume(type="volume", source="cache", target="/cache"),
        Volume(type="tmpfs", target="/tmp", size=1 << 20)))["mounts"]}
    assert mounts["/data"]["source"] == "/data" and "ro" in mounts["/data"]["options"]
    assert "nodev" in mounts["/data"]["options"] and "rbind" in mounts["/data"]["options"]
    assert mounts["/cache"]["source"] == "/v/shop_cache" and "rw" in mounts["/cache"]["options"]
    assert mounts["/tmp"]["type"] == "tmpfs" and f"size={1 << 20}" in mounts["/tmp"]["options"]
    assert mounts["/etc/hosts"]["source"] == "/x/hosts"
    with pytest.raises(TerminalFailure, match="/proc"):
        make(volumes=(Volume(type="tmpfs", target="/proc/x"),))


@pytest.mark.parametrize(("user", "expected"), [
    (None, (0, 0, [0])), ("app", (1000, 1000, [50, 1000])), ("1000", (1000, 1000, [50, 1000])),
    ("app:staff", (1000, 50, [50])), ("4242:4343", (4242, 4343, [4343])),
])
def test_users_from_the_images_files(user, expected):
    assert specs.lookup_user(user, PASSWD, GROUP) == expected


def test_an_unknown_user_is_refused():
    with pytest.raises(LookupError, match="unable to find user nobody"):
        specs.lookup_user("nobody", PASSWD, GROUP)
    with pytest.raises(LookupError, match="unable to find group wheel"):
        specs.lookup_user("app:wheel", PASSWD, GROUP)


def test_exec_process_overrides():
    base = make(env={"A": "1"})
    process = specs.exec_process(base, ["id"], env={"B": "2"}, user=(5, 6, [6]), workdir="/tmp")
    assert process["args"] == ["id"] and "A=1" in process["env"] and "B=2" in process["env"]
    assert process["user"] == {"uid": 5, "gid": 6, "additionalGids": [6]} and process["cwd"] == "/tmp"
    assert base["process"]["args"] == ["sh"]  # the container's own spec is left as it was


def test_chain_ids_are_containerds():
    a, b = sha256(b"a"), sha256(b"b")
    assert chain_ids([a, b]) == [a, sha256(f"{a} {b}".encode())]
    assert chain_ids([]) == []


def test_container_ids():
    assert container_id("shop", "web-0") == "shop_web-0"
    long = container_id("n" * 40, "x" * 40)
    assert len(long) == 64 and long != container_id("n" * 40, "x" * 39)


def test_event_payloads_carry_containerds_type_names():
    for name, kind in PAYLOADS.items():
        assert kind.DESCRIPTOR.full_name == name


def test_the_wire_reads_hpack_as_rfc_7541s_examples():
    """RFC 7541 appendix C.4: three requests' header blocks on one connection, Huffman-coded strings and the
    dynamic table included (wire.py reads containerd's answers so, without grpc)."""
    from orchestr_containerd import wire

    call = wire._Call(None, None)  # type: ignore[arg-type]  # decoding needs no socket
    blocks = ["828684418cf1e3c2e5f23a6ba0ab90f4ff", "828684be5886a8eb10649cbf",
              "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"]
    seen = []
    for block in blocks:
        call.headers = {}
        call.decode(bytes.fromhex(block))
        seen.append(call.headers)
    assert seen[0] == {b":method": b"GET", b":scheme": b"http", b":path": b"/", b":authority": b"www.example.com"}
    assert seen[1] == {**seen[0], b"cache-control": b"no-cache"}
    assert seen[2] == {b":method": b"GET", b":scheme": b"https", b":path": b"/index.html",
                       b":authority": b"www.example.com", b"custom-key": b"custom-value"}
    assert [name for name, _ in call.dynamic] == [b"custom-key", b"cache-control", b":authority"]
    assert wire._unhuffman(bytes.fromhex("25a849e95bb8e8b4bf")) == b"custom-value"


def test_the_wire_writes_integers_and_literals_as_hpack_does():
    from orchestr_containerd import wire

    assert wire._encode_integer(10, 5) == bytes([10])  # RFC 7541 C.1.1
    assert wire._encode_integer(1337, 5) == bytes([31, 154, 10])  # C.1.2
    block = wire._literal(b"custom-key", b"x" * 300)
    call = wire._Call(None, None)  # type: ignore[arg-type]
    call.decode(block)
    assert call.headers == {b"custom-key": b"x" * 300} and not call.dynamic
