"""Bridge networking for the native runtime: a bridge and subnet per namespace, a named netns per container.

Layout: each orchestr namespace of a state dir gets a bridge orc-<hash> with a /24 of its own from the pool
(ORCHESTR_NATIVE_SUBNET, default the first free /24 of 10.88.0.0/16, then 10.89.0.0/16 and on, skipping any
that a host route overlaps, Docker's 172.17.0.0/16 included). Containers of one namespace share its bridge;
forwarding between two orchestr bridges is dropped, so namespaces are isolated from each other, and reach one
another only through published ports. A namespace holds at most 253 containers on the bridge; bridges made
with ORCHESTR_NATIVE_SUBNET_PREFIX set (16 to 30) get subnets of that size instead, /22 for 1021 containers.

Each container gets a network namespace of its own, made at create and bind-mounted at
/run/orchestr/netns/<id> (netns.py), before any process exists: a veth pair with `orc<id[:10]>` on the bridge
and eth0 inside, its address from the namespace's lease files (ipam.py), the default route via the bridge, lo
up, and the MTU of the host's default-route interface (links.py). The container's init joins it with setns at
every start, so exec, restarts by the supervisor and stop/start all keep the same namespace and address. A
delete unmounts it, and the kernel drops the veth with it.

/etc/hosts is a file in the container's directory, bind-mounted and rewritten in place (a rename would leave
the mount on the old file): `<ip> <container-name> <service>` for the container and every peer of its
namespace, kept current as containers are created and deleted. /etc/resolv.conf is the host's without
loopback nameservers (names.py).

Published ports are DNAT rules (firewall.py), not a userland proxy. DNAT needs no process on the data path,
so ports keep working whether or not the supervisor runs (it exits when idle and may be restarted); UDP works
like TCP with no per-flow state of ours; clients from other hosts keep their source address; and the rules
live exactly as long as the container. 127.0.0.1:hostPort works through route_localnet on the bridge and a
MASQUERADE of 127.0.0.0/8 into it, with an INPUT rule that keeps containers from using route_localnet to
reach the host's loopback-only services. The port is checked free on the host (by binding it) and claimed
host-wide (ports.py) before anything changes.

Every host-wide change (bridges, subnets, claims, iptables) happens under one flock, /run/orchestr/network.lock,
which several state dirs and processes share. A create or delete that dies half-way leaves a lease whose
container has no config; the next create or reattach() removes it with its namespace, veth and rules.

A namespace's bridge outlives its last container (as docker0 does): making one and deleting it again (the
kernel's bridge teardown and the iptables rewrite) cost a one-off `orchestr run` in an empty namespace more than
the rest of it. Network.remove() drops it once the namespace has no container, which a delete of the whole
namespace does; the bridges of empty namespaces give way when the subnet pool runs short; /run/orchestr/bridges/<bridge> names the state dir of each, so that a bridge whose state dir was
removed is dropped by the next create of any state dir.
"""

from .manager import Network

__all__ = ["Network"]
