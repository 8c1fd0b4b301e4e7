"""Looking at the tests' CRI runtime as crictl would, and at what its pods leave on the host."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc

from orchestr_cri.proto import cri_pb2 as pb
from orchestr_cri.proto import cri_pb2_grpc as rpc


@dataclass
class PodTrace:
    """What a running pod has on the host, to check that its delete took all of it away."""

    id: str
    ip: str
    netns: str  # the network namespace's bind mount
    cni_allocation: Path  # host-local's record of the pod's address


class Cri:
    """Blocking calls to the CRI runtime of a CriContainerd (scripts/cri_containerd.py)."""

    def __init__(self, containerd) -> None:  # type: ignore[no-untyped-def]
        self.containerd = containerd
        self.channel = grpc.insecure_channel(containerd.endpoint)
        self.runtime = rpc.RuntimeServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def pods(self, namespace: str | None = None) -> list[pb.PodSandbox]:
        selector = {"orchestr.namespace": namespace} if namespace else {}
        request = pb.ListPodSandboxRequest(filter=pb.PodSandboxFilter(label_selector=selector))
        return list(self.runtime.ListPodSandbox(request, timeout=30).items)

    def containers(self, namespace: str | None = None) -> list[pb.Container]:
        selector = {"orchestr.namespace": namespace} if namespace else {}
        request = pb.ListContainersRequest(filter=pb.ContainerFilter(label_selector=selector))
        return list(self.runtime.ListContainers(request, timeout=30).containers)

    def pod_info(self, id: str) -> tuple[pb.PodSandboxStatus, dict]:
        answer = self.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=id, verbose=True), timeout=30)
        return answer.status, json.loads(answer.info["info"])

    def trace(self, id: str) -> PodTrace:
        status, info = self.pod_info(id)
        netns = next(n["path"] for n in info["runtimeSpec"]["linux"]["namespaces"] if n["type"] == "network")
        meta = json.loads((self.containerd.dir / "meta.json").read_text())
        allocation = self.containerd.dir / "cni-data" / f"orchestr-{meta['bridge']}" / status.network.ip
        return PodTrace(id, status.network.ip, netns, allocation)

    def veths(self) -> list[str]:
        """The interfaces enslaved to this runtime's CNI bridge."""
        bridge = json.loads((self.containerd.dir / "meta.json").read_text())["bridge"]
        out = subprocess.run(["ip", "-o", "link", "show", "master", bridge], capture_output=True, text=True).stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]

    def leftovers(self, trace: PodTrace) -> list[str]:
        """What of a deleted pod is still on the host."""
        left = []
        if any(p.id == trace.id for p in self.pods()):
            left.append(f"pod sandbox {trace.id[:12]}")
        if any(c.pod_sandbox_id == trace.id for c in self.containers()):
            left.append(f"a container of pod {trace.id[:12]}")
        if Path(trace.netns).exists():
            left.append(f"network namespace {trace.netns}")
        if trace.cni_allocation.exists():
            left.append(f"CNI address allocation {trace.cni_allocation}")
        for table in ("nat", "filter"):
            rules = subprocess.run(["iptables", "-w", "-t", table, "-S"], capture_output=True, text=True).stdout
            left += [f"iptables {table}: {r}" for r in rules.splitlines()
                     if re.search(rf"\b{re.escape(trace.ip)}(/32)?\b", r) or trace.id in r]
        return left
