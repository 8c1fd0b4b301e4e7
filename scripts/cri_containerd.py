"""A CRI runtime of one's own: a second containerd, beside the host's, whose CRI plugin starts pods on this host.

    .venv/bin/python scripts/cri_containerd.py start DIR   # prints ORCHESTR_CRI_ENDPOINT=unix://DIR/containerd.sock
    .venv/bin/python scripts/cri_containerd.py stop DIR    # removes its pods, stops it, leaves nothing behind

It has its own root, state, socket and config under DIR, so the host's containerd and its config stay as they
are. Its config settles what keeps Debian's containerd 1.6 CRI plugin from starting any pod as installed:
- restrict_oom_score_adj: root without CAP_SYS_RESOURCE (a container, many CI machines) cannot give the
  sandbox the oom_score_adj of -998 the plugin asks for, and every RunPodSandbox fails with "can't get final
  child's PID from pipe: EOF";
- sandbox_image: registry.k8s.io/pause cannot be pulled offline, so a busybox image whose entry point sleeps
  is built here and imported as the sandbox image;
- CNI: a bridge (host-local addresses kept under DIR) with portmap and firewall, in a conf dir of its own,
  on a /24 this host does not route yet.
Registries on loopback need no setting: the plugin speaks plain HTTP to localhost and 127.0.0.1 itself.

The tests and benchmarks start one per session through CriContainerd; `stop` also removes what CNI leaves
after its last pod (the bridge, the iptables chains it made) and any mount or shim of this containerd's.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # orchestr.testing.images, when run from a checkout without the venv's path

SANDBOX_IMAGE = "localhost/orchestr-pause:1"
CNI_BIN = "/usr/lib/cni"
WAIT = 60.0  # seconds containerd gets to answer
CLAIMS = Path("/run/orchestr-cri-subnets")
# What CNI's portmap and firewall plugins make on first use and never remove: (table, chain, jumped to from).
CNI_CHAINS = (
    ("nat", "CNI-HOSTPORT-DNAT", ("PREROUTING", "OUTPUT")),
    ("nat", "CNI-HOSTPORT-SNAT", ("POSTROUTING",)),
    ("nat", "CNI-HOSTPORT-MASQ", ("POSTROUTING",)),
    ("nat", "CNI-HOSTPORT-SETMARK", ()),
    ("filter", "CNI-FORWARD", ("FORWARD",)),
    ("filter", "CNI-ADMIN", ()),
)


def _config(d: Path, bridge: str) -> str:
    return f"""version = 2
root = "{d / 'root'}"
state = "{d / 'state'}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{d / 'containerd.sock'}"

[ttrpc]
  address = "{d / 'containerd.sock.ttrpc'}"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d / 'opt'}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{d / 'net.d'}"
    max_conf_num = 1
"""


def _cni(d: Path, bridge: str, subnet: str) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": f"orchestr-{bridge}",
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": str(d / "cni-data")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "firewall"},
        ],
    }


def _routed() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    nets = []
    for line in out.splitlines():
        first = line.split()[0] if line.split() else ""
        if first in ("default", "broadcast", "local", "unreachable", "blackhole", "prohibit"):
            first = line.split()[1] if first != "default" and len(line.split()) > 1 else ""
        with contextlib.suppress(ValueError):
            nets.append(ipaddress.ip_network(first, strict=False))
    return nets


@contextlib.contextmanager
def _claims_locked():
    """The host's claims on the pods' subnets, one file per subnet naming the DIR that holds it, under a lock:
    a bridge's route appears only with its first pod, so two starting at once would otherwise pick the same /24."""
    import fcntl

    CLAIMS.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(CLAIMS / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def free_subnet(owner: Path) -> str:
    """Claims for owner a /24 in 10.200.0.0/13 that nothing on this host routes (native takes 10.88.0.0/16
    onwards) and no other private containerd holds; a claim whose DIR is gone is stale and taken over."""
    with _claims_locked():
        claimed = set()
        for claim in CLAIMS.glob("10.*"):
            if Path(claim.read_text()).is_dir():
                claimed.add(claim.name.replace("_", "/"))
            else:
                claim.unlink()
        routed = _routed()
        for net in ipaddress.ip_network("10.200.0.0/13").subnets(new_prefix=24):
            if not any(net.overlaps(r) for r in routed) and net.network_address.packed[2] != 0 \
                    and str(net) not in claimed:
                (CLAIMS / str(net).replace("/", "_")).write_text(str(owner))
                return str(net)
    raise RuntimeError("no free /24 in 10.200.0.0/13 for the CRI pods' bridge")


def release_subnet(owner: Path, subnet: str) -> None:
    with _claims_locked():
        claim = CLAIMS / subnet.replace("/", "_")
        with contextlib.suppress(OSError):
            if claim.read_text() == str(owner):
                claim.unlink()


def _chains(table: str) -> set[str]:
    out = subprocess.run(["iptables", "-w", "-t", table, "-S"], capture_output=True, text=True).stdout
    return {line.split()[1] for line in out.splitlines() if line.startswith("-N ")}


class CriContainerd:
    """A private containerd with a working CRI plugin, under directory d."""

    def __init__(self, d: Path | str):
        self.dir = Path(d).resolve()
        self.socket = self.dir / "containerd.sock"
        self.endpoint = f"unix://{self.socket}"
        self.process: subprocess.Popen | None = None

    def _meta(self) -> dict:
        try:
            return json.loads((self.dir / "meta.json").read_text())
        except (OSError, ValueError):
            return {}

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["ctr", "--address", str(self.socket), "-n", "k8s.io", *args], capture_output=True,
                              text=True, check=check, stdin=subprocess.DEVNULL)

    def answers(self) -> bool:
        return subprocess.run(["ctr", "--address", str(self.socket), "--connect-timeout", "1s", "version"],
                              capture_output=True, stdin=subprocess.DEVNULL).returncode == 0

    def start(self) -> str:
        """Starts it (once: a second start of a running one changes nothing); returns the CRI endpoint."""
        if self.socket.exists() and self.answers():
            return self.endpoint
        for sub in ("root", "state", "opt", "net.d", "cni-data"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        meta = self._meta()
        if not meta:
            meta = {"bridge": f"cri{secrets.token_hex(4)}", "subnet": free_subnet(self.dir),
                    "chains": {t: sorted(_chains(t) & {c for tt, c, _ in CNI_CHAINS if tt == t})
                               for t in ("nat", "filter")}}
            (self.dir / "meta.json").write_text(json.dumps(meta))
        (self.dir / "config.toml").write_text(_config(self.dir, meta["bridge"]))
        (self.dir / "net.d" / "10-orchestr.conflist").write_text(
            json.dumps(_cni(self.dir, meta["bridge"], meta["subnet"]), indent=2))
        log = open(self.dir / "containerd.log", "ab")  # noqa: SIM115 - the daemon keeps writing it
        self.process = subprocess.Popen(["containerd", "--config", str(self.dir / "config.toml")], stdout=log,
                                        stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        (self.dir / "containerd.pid").write_text(str(self.process.pid))
        deadline = time.monotonic() + WAIT
        while not (self.socket.exists() and self.answers()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = (self.dir / "containerd.log").read_text(errors="replace").splitlines()[-20:]
                self.stop()
                raise RuntimeError("the CRI containerd did not start:\n" + "\n".join(tail))
            time.sleep(0.1)
        self._import_sandbox_image()
        return self.endpoint

    def _import_sandbox_image(self) -> None:
        from orchestr.testing import images

        archive = self.dir / "pause.tar"
        images.busybox_image(archive, [SANDBOX_IMAGE], entrypoint=["sleep", "2147483647"], cmd=None)
        self.ctr("images", "import", str(archive))
        archive.unlink()

    def _pid(self) -> int | None:
        try:
            pid = int((self.dir / "containerd.pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if str(self.dir / "config.toml").encode() in cmdline else None

    def stop(self) -> None:
        """Removes every pod it runs, stops it and its shims, and removes DIR and what CNI left on the host."""
        if self.socket.exists() and self.answers():
            self._remove_pods()
        pid = self._pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                if self.process is not None:
                    self.process.poll()
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if self.process is not None:
                self.process.wait()
        self._kill_shims()
        self._unmount()
        self._clean_network()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _remove_pods(self) -> None:
        crictl = [sys.executable, "-c", _REMOVE_PODS, self.endpoint]
        subprocess.run(crictl, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)

    def _kill_shims(self) -> None:
        mine = str(self.socket).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0].endswith(b"containerd-shim-runc-v2") and mine in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)

    def _unmount(self) -> None:
        prefix = str(self.dir) + "/"
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                points.append(point)
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)

    def _clean_network(self) -> None:
        meta = self._meta()
        if not meta:
            return
        subprocess.run(["ip", "link", "delete", meta["bridge"]], capture_output=True)
        self._remove_pod_rules(meta)
        release_subnet(self.dir, meta["subnet"])
        ours = [(t, c, p) for t, c, p in CNI_CHAINS if c not in meta["chains"].get(t, []) and c in _chains(t)]
        # Another CNI user of this host may have pods in these chains: then they stay, and nothing of them is
        # flushed; else their rules (the plugins' fixed ones) go one by one, and a chain only once it is empty.
        if any(_foreign(rule) for table, chain, _ in ours for rule in _rules(table, chain)):
            return
        for table, chain, parents in ours:
            for parent in parents:
                for rule in _rules(table, parent):
                    if rule.endswith(f"-j {chain}"):
                        _iptables(table, "-D", *shlex.split(rule)[1:])
        for table, chain, _ in ours:
            for rule in _rules(table, chain):
                _iptables(table, "-D", *shlex.split(rule)[1:])
        for table, chain, _ in ours:
            _iptables(table, "-X", chain)

    @staticmethod
    def _remove_pod_rules(meta: dict) -> None:
        """Rules CNI made for a pod of this containerd that a teardown left (none when every pod was removed
        through CRI): each names the network or an address of its subnet; the per-pod chains they jump to go too."""
        subnet = ipaddress.ip_network(meta["subnet"])
        shared = {c for _, c, _ in CNI_CHAINS}
        for table in ("nat", "filter"):
            chains = set()
            for rule in _rules(table):
                addresses = re.findall(r"(\d+\.\d+\.\d+\.\d+)(?:/32)?", rule)
                if f"orchestr-{meta['bridge']}" not in rule and not any(
                        ipaddress.ip_address(a) in subnet for a in addresses):
                    continue
                _iptables(table, "-D", *shlex.split(rule)[1:])
                target = rule.rsplit(" -j ", 1)[-1] if " -j " in rule else ""
                if target.startswith("CNI-") and target not in shared:
                    chains.add(target)
            for chain in chains:
                _iptables(table, "-F", chain)
                _iptables(table, "-X", chain)


def _foreign(rule: str) -> bool:
    """Whether a rule of CNI's shared chains belongs to a pod (one jumps to a pod's chain, or names its address)."""
    shared = {c for _, c, _ in CNI_CHAINS}
    target = rule.rsplit(" -j ", 1)[-1].split()[0] if " -j " in rule else ""
    addresses = re.findall(r"\d+\.\d+\.\d+\.\d+", rule)
    return (target.startswith("CNI-") and target not in shared) or any(
        not ipaddress.ip_address(a).is_loopback and a != "0.0.0.0" for a in addresses)


def _rules(table: str, chain: str | None = None) -> list[str]:
    """The -A lines of iptables -S (of one chain, or the whole table)."""
    out = subprocess.run(["iptables", "-w", "-t", table, "-S", *([chain] if chain else [])], capture_output=True,
                         text=True).stdout
    return [line for line in out.splitlines() if line.startswith("-A ")]


def _iptables(table: str, *args: str) -> None:
    subprocess.run(["iptables", "-w", "-t", table, *args], capture_output=True)


# Run in a child interpreter: removes every pod sandbox of the CRI runtime at argv[1] (its containers with it).
_REMOVE_PODS = """
import sys, grpc
from orchestr_cri.proto import cri_pb2 as pb, cri_pb2_grpc as rpc
with grpc.insecure_channel(sys.argv[1]) as channel:
    rt = rpc.RuntimeServiceStub(channel)
    for pod in rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items:
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("dir", type=Path, help="where its root, state, socket, config and logs live")
    args = parser.parse_args()
    runtime = CriContainerd(args.dir)
    if args.action == "start":
        print(f"ORCHESTR_CRI_ENDPOINT={runtime.start()}")
    else:
        runtime.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
