"""The kernel side of bridge networking, over netlink with pyroute2: bridges, veth pairs, addresses, routes.

A container's veth pair and its namespace's addresses are set up with pyroute2's message classes, sent in
batches on plain netlink sockets: IPRoute runs its asyncio machinery for every request and makes an event
loop for every socket, and that was most of what a bridged container took to create. The rare rest (bridges,
route and address dumps) goes through IPRoute, whose own event loop cannot run in a thread whose loop
already runs: call these from worker threads, as the container verbs do.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import secrets
import socket
import struct

from pyroute2 import IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_ERROR
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_DELNEIGH, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from . import netns

IFF_UP = 0x1
MAIN_TABLE = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1
PEER = "eth0"  # the container's side of the pair
_seq = itertools.count(1)


def routes() -> tuple[list[ipaddress.IPv4Network], int]:
    """The networks the host already routes somewhere (its default route aside), and the MTU of the interface
    its default route leaves by (1500 when there is none)."""
    with IPRoute(groups=0) as ipr:
        found = ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE)
        default = next((r.get("RTA_OIF") for r in found if r["dst_len"] == 0 and r.get("RTA_OIF")), None)
        mtu = ipr.get_links(default)[0].get("IFLA_MTU") if default else None
    networks = [ipaddress.ip_network(f"{r.get('RTA_DST')}/{r['dst_len']}", strict=False) for r in found if r["dst_len"]]
    return networks, mtu or 1500


def bridges(prefix: str) -> dict[str, ipaddress.IPv4Network]:
    """Every bridge of the host named with prefix, with the network of its address."""
    with IPRoute(groups=0) as ipr:
        return {a.get("IFA_LABEL"): ipaddress.ip_network(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}", strict=False)
                for a in ipr.get_addr(family=socket.AF_INET) if (a.get("IFA_LABEL") or "").startswith(prefix)}


def create_bridge(name: str, gateway: ipaddress.IPv4Interface, mtu: int) -> None:
    with IPRoute(groups=0) as ipr:
        # A fixed address of its own: a bridge otherwise takes its lowest port's, changing as containers come
        # and go, and the containers' ARP caches go stale.
        mac = ":".join(f"{b:02x}" for b in bytes([0x02]) + secrets.token_bytes(5))
        ipr.link("add", ifname=name, kind="bridge", mtu=mtu, address=mac)
        index = ipr.link_lookup(ifname=name)[0]
        ipr.addr("add", index=index, address=str(gateway.ip), prefixlen=gateway.network.prefixlen)
        ipr.link("set", index=index, state="up")


def enslave(bridge: str, ports: list[str]) -> None:
    if not ports:
        return
    with IPRoute(groups=0) as ipr:
        master = ipr.link_lookup(ifname=bridge)[0]
        for name in ports:
            for index in ipr.link_lookup(ifname=name):
                ipr.link("set", index=index, master=master)


def delete_link(name: str) -> None:
    with IPRoute(groups=0) as ipr:
        for index in ipr.link_lookup(ifname=name):
            try:
                ipr.link("del", index=index)
            except NetlinkError as e:
                if e.code != errno.ENODEV:
                    raise


def connect(where: str, create: bool, veth: str, bridge: str, mtu: int, address: ipaddress.IPv4Interface,
            gateway: ipaddress.IPv4Address) -> None:
    """A container's veth pair: veth on bridge in the host, eth0 with address and the default route via
    gateway in the network namespace at where (made first when create), lo up."""
    bridge_index = socket.if_nametoindex(bridge)
    with _socket() as host:
        def configure() -> None:
            here = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _request(host, [(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, _link(
                    0, IFF_UP, ("IFLA_IFNAME", veth), ("IFLA_MTU", mtu), ("IFLA_MASTER", bridge_index),
                    ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", {"attrs": [
                        ("VETH_INFO_PEER", {"attrs": [
                            ("IFLA_IFNAME", PEER), ("IFLA_MTU", mtu), ("IFLA_NET_NS_FD", here)]}),
                    ]})]}),
                ))])
            finally:
                os.close(here)
            eth0 = socket.if_nametoindex(PEER)  # asked in this thread, so in the container's namespace
            with _socket() as inside:
                _request(inside, [
                    (RTM_NEWLINK, 0, _link(socket.if_nametoindex("lo"), IFF_UP)),
                    (RTM_NEWLINK, 0, _link(eth0, IFF_UP)),
                    (RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, _address(eth0, address)),
                    (RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, _default_route(eth0, gateway)),
                ])

        netns.inside(where, configure, create=create)
        # An address is handed out again once its container is gone; the host's neighbour entry may still give
        # the old container's MAC and stay REACHABLE while traffic to published ports keeps confirming it, so
        # nothing reaches the new one. Forget it.
        neighbour = ndmsg()
        neighbour["family"], neighbour["ifindex"] = socket.AF_INET, bridge_index
        neighbour["attrs"] = [("NDA_DST", str(address.ip))]
        try:
            _request(host, [(RTM_DELNEIGH, 0, neighbour)])
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    sock.bind((0, 0))
    sock.settimeout(10)
    return sock


def _link(index: int, flags: int, *attrs) -> ifinfmsg:
    msg = ifinfmsg()
    msg["family"], msg["index"], msg["flags"], msg["change"] = socket.AF_UNSPEC, index, flags, flags
    msg["attrs"] = list(attrs)
    return msg


def _address(index: int, address: ipaddress.IPv4Interface) -> ifaddrmsg:
    msg = ifaddrmsg()
    msg["family"], msg["prefixlen"], msg["index"] = socket.AF_INET, address.network.prefixlen, index
    msg["attrs"] = [("IFA_LOCAL", str(address.ip)), ("IFA_ADDRESS", str(address.ip))]
    return msg


def _default_route(index: int, gateway: ipaddress.IPv4Address) -> rtmsg:
    msg = rtmsg()
    msg["family"], msg["table"], msg["proto"] = socket.AF_INET, MAIN_TABLE, RTPROT_BOOT
    msg["scope"], msg["type"] = RT_SCOPE_UNIVERSE, RTN_UNICAST
    msg["attrs"] = [("RTA_GATEWAY", str(gateway)), ("RTA_OIF", index)]
    return msg


def _request(sock: socket.socket, messages: list) -> None:
    """Sends every message in one datagram and waits for all their acknowledgements; the first error raises."""
    data, pending = b"", {}
    for kind, flags, msg in messages:
        seq = next(_seq)
        msg["header"]["type"], msg["header"]["sequence_number"] = kind, seq
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
        msg.encode()
        data += msg.data
        pending[seq] = kind
    sock.send(data)
    error = 0
    while pending:
        buf = sock.recv(65536)
        offset = 0
        while offset + 16 <= len(buf):
            length, kind, _, seq, _ = struct.unpack_from("=IHHII", buf, offset)
            if kind == NLMSG_ERROR and seq in pending:
                code = -struct.unpack_from("=i", buf, offset + 16)[0]
                error = error or code
                del pending[seq]
            offset += max(16, (length + 3) & ~3)
    if error:
        raise OSError(error, f"netlink: {os.strerror(error)}")
