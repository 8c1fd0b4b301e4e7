"""The kernel side of bridge networking, over rtnetlink: bridges, veth pairs, addresses, routes.

The few messages orchestr sends are packed here with struct on plain netlink sockets. A netlink library
(pyroute2) took 90-115 ms to import, more than the rest of a one-off `orchestr run`; these take none, and
need no event loop, so they are called from any thread.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import socket
import struct
from collections.abc import Iterator

from . import netns

# rtnetlink message types, header flags and attributes (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h)
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
RTM_DELNEIGH, NDA_DST = 29, 1
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 4, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL = 1, 2, 3
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
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
    networks, default = [], None
    with _socket() as sock:
        for body, attrs in _dump(sock, RTM_GETROUTE, struct.pack("=BBBBBBBBI", socket.AF_INET, *[0] * 8)):
            _, dst_len, _, _, table, *_ = struct.unpack_from("=BBBBBBBBI", body)
            if (struct.unpack("=I", attrs[RTA_TABLE])[0] if RTA_TABLE in attrs else table) != MAIN_TABLE:
                continue
            if dst_len:
                dst = ipaddress.IPv4Address(attrs.get(RTA_DST, bytes(4)))
                networks.append(ipaddress.IPv4Network(f"{dst}/{dst_len}", strict=False))
            elif RTA_OIF in attrs and default is None:
                default = struct.unpack("=I", attrs[RTA_OIF])[0]
    return networks, _mtu(default) if default else 1500


def bridges(prefix: str) -> dict[str, ipaddress.IPv4Network]:
    """Every bridge of the host named with prefix, with the network of its address."""
    found = {}
    with _socket() as sock:
        for body, attrs in _dump(sock, RTM_GETADDR, struct.pack("=BBBBI", socket.AF_INET, 0, 0, 0, 0)):
            prefixlen = body[1]
            label = attrs.get(IFA_LABEL, b"").rstrip(b"\0").decode()
            if label.startswith(prefix) and IFA_ADDRESS in attrs:
                address = ipaddress.IPv4Address(attrs[IFA_ADDRESS])
                found[label] = ipaddress.IPv4Network(f"{address}/{prefixlen}", strict=False)
    return found


def create_bridge(name: str, gateway: ipaddress.IPv4Interface, mtu: int) -> None:
    # A fixed address of its own: a bridge otherwise takes its lowest port's, changing as containers come and
    # go, and the containers' ARP caches go stale.
    mac = bytes([0x02]) + os.urandom(5)
    with _socket() as sock:
        _request(sock, [(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, _link(
            0, 0, _attr(IFLA_IFNAME, _string(name)), _attr(IFLA_MTU, struct.pack("=I", mtu)),
            _attr(IFLA_ADDRESS, mac), _attr(IFLA_LINKINFO, _attr(IFLA_INFO_KIND, _string("bridge")))))])
        index = socket.if_nametoindex(name)
        _request(sock, [(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, _address(index, gateway)),
                        (RTM_NEWLINK, 0, _link(index, IFF_UP))])


def enslave(bridge: str, ports: list[str]) -> None:
    if not ports:
        return
    master = struct.pack("=I", socket.if_nametoindex(bridge))
    with _socket() as sock:
        for name in ports:
            index = _index(name)
            if index:
                _request(sock, [(RTM_NEWLINK, 0, _link(index, 0, _attr(IFLA_MASTER, master)))])


def delete_link(name: str) -> None:
    """Deletes the link called name, if there is one."""
    index = _index(name)
    if not index:
        return
    with _socket() as sock:
        try:
            _request(sock, [(RTM_DELLINK, 0, _link(index, 0))])
        except OSError as e:
            if e.errno != errno.ENODEV:  # gone meanwhile
                raise


def connect(where: str, create: bool, veth: str, bridge: str, mtu: int, address: ipaddress.IPv4Interface,
            gateway: ipaddress.IPv4Address) -> None:
    """A container's veth pair: veth on bridge in the host, eth0 with address and the default route via
    gateway in the network namespace at where (made first when create), lo up."""
    bridge_index = socket.if_nametoindex(bridge)
    with _socket() as host:  # opened here, so in the host's namespace
        def configure() -> None:
            here = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                peer = _ifinfo(0, 0) + _attr(IFLA_IFNAME, _string(PEER)) + _attr(IFLA_MTU, struct.pack("=I", mtu)) \
                    + _attr(IFLA_NET_NS_FD, struct.pack("=I", here))
                _request(host, [(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, _link(
                    0, IFF_UP, _attr(IFLA_IFNAME, _string(veth)), _attr(IFLA_MTU, struct.pack("=I", mtu)),
                    _attr(IFLA_MASTER, struct.pack("=I", bridge_index)),
                    _attr(IFLA_LINKINFO, _attr(IFLA_INFO_KIND, _string("veth"))
                          + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer)))))])
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
        neighbour = struct.pack("=BBHiHBB", socket.AF_INET, 0, 0, bridge_index, 0, 0, 0) \
            + _attr(NDA_DST, address.ip.packed)
        try:
            _request(host, [(RTM_DELNEIGH, 0, neighbour)])
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise


# -- messages -------------------------------------------------------------------------------


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    sock.bind((0, 0))
    sock.settimeout(10)
    return sock


def _attr(kind: int, payload: bytes) -> bytes:
    """One attribute: length, type, payload, padded to 4 bytes."""
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + bytes(-len(data) % 4)


def _string(text: str) -> bytes:
    return text.encode() + b"\0"


def _ifinfo(index: int, flags: int) -> bytes:
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, flags, flags)  # change: only the flags given


def _link(index: int, flags: int, *attrs: bytes) -> bytes:
    return _ifinfo(index, flags) + b"".join(attrs)


def _address(index: int, address: ipaddress.IPv4Interface) -> bytes:
    ip = address.ip.packed
    return struct.pack("=BBBBI", socket.AF_INET, address.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index) \
        + _attr(IFA_LOCAL, ip) + _attr(IFA_ADDRESS, ip)


def _default_route(index: int, gateway: ipaddress.IPv4Address) -> bytes:
    return struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, MAIN_TABLE, RTPROT_BOOT, RT_SCOPE_UNIVERSE,
                       RTN_UNICAST, 0) + _attr(RTA_GATEWAY, gateway.packed) + _attr(RTA_OIF, struct.pack("=I", index))


def _request(sock: socket.socket, messages: list[tuple[int, int, bytes]]) -> None:
    """Sends every message in one datagram and waits for all their acknowledgements; the first error raises."""
    data, pending = b"", set()
    for kind, flags, body in messages:
        seq = next(_seq)
        data += struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq, 0) + body
        pending.add(seq)
    sock.send(data)
    error = 0
    while pending:
        for kind, seq, body in _messages(sock.recv(65536)):
            if kind == NLMSG_ERROR and seq in pending:
                error = error or -struct.unpack_from("=i", body)[0]
                pending.discard(seq)
    if error:
        raise OSError(error, f"netlink: {os.strerror(error)}")


def _dump(sock: socket.socket, kind: int, header: bytes) -> Iterator[tuple[bytes, dict[int, bytes]]]:
    """Every object a dump request of kind answers: its fixed header and its attributes by type."""
    seq = next(_seq)
    sock.send(struct.pack("=IHHII", 16 + len(header), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + header)
    while True:
        for got, got_seq, body in _messages(sock.recv(1 << 20)):
            if got_seq != seq:
                continue
            if got == NLMSG_DONE:
                return
            if got == NLMSG_ERROR:
                code = -struct.unpack_from("=i", body)[0]
                raise OSError(code, f"netlink: {os.strerror(code)}")
            yield body, _attrs(body[len(header):])


def _messages(buf: bytes) -> Iterator[tuple[int, int, bytes]]:
    offset = 0
    while offset + 16 <= len(buf):
        length, kind, _, seq, _ = struct.unpack_from("=IHHII", buf, offset)
        yield kind, seq, buf[offset + 16:offset + length]
        offset += max(16, (length + 3) & ~3)


def _attrs(data: bytes) -> dict[int, bytes]:
    found, offset = {}, 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        found[kind & 0x3FFF] = data[offset + 4:offset + length]  # without the nested and byte-order bits
        offset += (length + 3) & ~3
    return found


def _index(name: str) -> int | None:
    try:
        return socket.if_nametoindex(name)
    except OSError:  # no such link
        return None


def _mtu(index: int) -> int:
    try:
        with open(f"/sys/class/net/{socket.if_indextoname(index)}/mtu") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1500
