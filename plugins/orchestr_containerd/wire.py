"""gRPC calls to containerd without grpc: HTTP/2 over its unix socket, one connection per call, blocking.

For the one-off run, which makes a dozen calls one after the other: grpc's import (its C core, asyncio with it)
costs more than those calls take. A call here is a request message and its answer's messages (several for a
server stream), or a Status. Only what a gRPC client needs of HTTP/2 (RFC 9113) and HPACK (RFC 7541) is here:
one stream per connection, flow control on what is sent, headers read with the static, dynamic and Huffman
tables, nothing compressed.
"""

from __future__ import annotations

import _socket  # socket.py's wrapper adds nothing used here, and its enums cost a few ms to import
import struct
import time
from collections.abc import Sequence

# grpc's status codes, by number
CODES = ("OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS PERMISSION_DENIED "
         "RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS "
         "UNAUTHENTICATED").split()

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
MAX_FRAME = 16384  # the size every HTTP/2 peer accepts
WINDOW = (1 << 31) - 1  # the largest receive window, announced at once: no flow control of answers needed
INITIAL_WINDOW = 65535
READ = 1 << 16

# HPACK's static table (RFC 7541 appendix A): names of entries 1 to 61, and the values that are not empty
_NAMES = (":authority :method :method :path :path :scheme :scheme :status :status :status :status :status :status "
          ":status accept-charset accept-encoding accept-language accept-ranges accept "
          "access-control-allow-origin age allow authorization cache-control content-disposition content-encoding "
          "content-language content-length content-location content-range content-type cookie date etag expect "
          "expires from host if-match if-modified-since if-none-match if-range if-unmodified-since last-modified "
          "link location max-forwards proxy-authenticate proxy-authorization range referer refresh retry-after "
          "server set-cookie strict-transport-security transfer-encoding user-agent vary via www-authenticate").split()
_VALUES = {2: "GET", 3: "POST", 4: "/", 5: "/index.html", 6: "http", 7: "https", 8: "200", 9: "204", 10: "206",
           11: "304", 12: "400", 13: "404", 14: "500", 16: "gzip, deflate"}
STATIC = [(n.encode(), _VALUES.get(i, "").encode()) for i, n in enumerate(_NAMES, 1)]
# HPACK's Huffman code (RFC 7541 appendix B) is canonical: the code length of each byte value (and of EOS, 30)
# says every code
_LENGTHS = bytes.fromhex(
    "0d171c1c1c1c1c1c1c181e1c1c1e1c1c1c1c1c1c1c1c1e1c1c1c1c1c1c1c1c1c060a0a0c0d06080b0a0a080b080606060505050606060606"
    "060607080f060c0a0d06070707070707070707070707070707070707070707070807080d130d0e060f050605060506060605070706060605"
    "06070605050607070707070f0b0e0d1c141614141616161716171717171718171818161718171717171516171617171816151416161717"
    "151716161815161717151516151716171714161616171616171a1a1413161716191a1a1a1b1b1a181913151a1b1b1a1b1815151a1a1c1b"
    "1b1b14181415161515171616191918181a171a1b1a1a1b1b1b1b1b1c1b1b1b1b1b1a") + bytes([30])
_huffman: dict[tuple[int, int], int] = {}


class Status(Exception):
    """A call that did not end OK: its gRPC status code (a number, named by name) and details."""

    def __init__(self, code: int, details: str):
        super().__init__(f"{CODES[code] if 0 <= code < len(CODES) else code}: {details}")
        self.code, self.details = code, details

    @property
    def name(self) -> str:
        """The status's name; a deadline the server noticed first comes back as UNKNOWN "context deadline
        exceeded", named DEADLINE_EXCEEDED here."""
        if self.code == 2 and "context deadline exceeded" in self.details:
            return "DEADLINE_EXCEEDED"
        return CODES[self.code] if 0 <= self.code < len(CODES) else "UNKNOWN"


def call(path: str, method: str, request: bytes, metadata: Sequence[tuple[str, str]] = (),
         timeout: float | None = None) -> list[bytes]:
    """The messages answering request (one serialized message) to method ("/package.Service/Method") of the
    gRPC server at the unix socket path; Status when the call does not end OK, the socket included."""
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    except OSError as e:
        raise Status(14, str(e)) from None
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        return _Call(sock, deadline).run(method, request, metadata, timeout)
    except TimeoutError:
        raise Status(4, "no answer in time") from None
    except OSError as e:
        raise Status(14, f"{path}: {e.strerror or e}") from None
    finally:
        sock.close()


class _Call:
    def __init__(self, sock: _socket.socket, deadline: float | None):
        self.sock, self.deadline = sock, deadline
        self.buffer = b""
        self.send_window = self.stream_window = INITIAL_WINDOW
        self.dynamic: list[tuple[bytes, bytes]] = []
        self.table_size, self.table_max = 0, 4096
        self.headers: dict[bytes, bytes] = {}
        self.block = b""  # a header block still coming in CONTINUATION frames
        self.body = bytearray()
        self.ended = self.closing = False

    def run(self, method: str, request: bytes, metadata: Sequence[tuple[str, str]], timeout: float | None
            ) -> list[bytes]:
        fields = [(b":path", method.encode()), (b":authority", b"localhost"), (b"content-type", b"application/grpc"),
                  (b"te", b"trailers"), *((k.encode(), v.encode()) for k, v in metadata)]
        if timeout is not None:
            fields.append((b"grpc-timeout", b"%dm" % min(int(timeout * 1000), 99_999_999)))
        block = b"\x83\x86" + b"".join(_literal(k, v) for k, v in fields)  # :method POST, :scheme http
        self.sock.sendall(PREFACE
                          + _frame(SETTINGS, 0, 0, struct.pack(">HIHI", 2, 0, 4, WINDOW))  # no push; our window
                          + _frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", WINDOW - INITIAL_WINDOW))
                          + _frame(HEADERS, END_HEADERS, 1, block))
        message = struct.pack(">BI", 0, len(request)) + request
        sent = 0
        while sent < len(message):
            while min(self.send_window, self.stream_window) <= 0:  # the server's windows, filled: wait for more
                self.frame()
            n = min(MAX_FRAME, self.send_window, self.stream_window, len(message) - sent)
            self.sock.sendall(_frame(DATA, END_STREAM if sent + n == len(message) else 0, 1, message[sent: sent + n]))
            self.send_window -= n
            self.stream_window -= n
            sent += n
        while not self.ended:
            self.frame()
        status = self.headers.get(b"grpc-status")
        if status is None:
            raise Status(13 if self.headers.get(b":status", b"200") == b"200" else 14,
                         f"an answer without a gRPC status (HTTP {self.headers.get(b':status', b'?').decode()})")
        if status != b"0":
            from urllib.parse import unquote

            raise Status(int(status), unquote(self.headers.get(b"grpc-message", b"").decode(errors="replace")))
        messages, body, at = [], bytes(self.body), 0
        while at + 5 <= len(body):
            compressed, size = struct.unpack_from(">BI", body, at)
            if compressed:
                raise Status(13, "a compressed answer")
            messages.append(body[at + 5: at + 5 + size])
            at += 5 + size
        return messages

    def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if self.deadline is not None:
                self.sock.settimeout(max(0.001, self.deadline - time.monotonic()))
            data = self.sock.recv(READ)
            if not data:
                raise Status(14, "containerd closed the connection")
            self.buffer += data
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def frame(self) -> None:
        """Reads one frame and does what it says."""
        head = self.read(9)
        kind, flags, stream = head[3], head[4], int.from_bytes(head[5:], "big") & 0x7FFFFFFF
        payload = self.read(int.from_bytes(head[:3], "big"))
        if kind == SETTINGS and not flags & ACK:
            for at in range(0, len(payload) - 5, 6):
                key, value = struct.unpack_from(">HI", payload, at)
                if key == 4:  # the server's window for each stream, ours included
                    self.stream_window += value - INITIAL_WINDOW
            self.sock.sendall(_frame(SETTINGS, ACK, 0, b""))
        elif kind == PING and not flags & ACK:
            self.sock.sendall(_frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            (increment,) = struct.unpack(">I", payload)
            if stream == 0:
                self.send_window += increment & 0x7FFFFFFF
            else:
                self.stream_window += increment & 0x7FFFFFFF
        elif kind == GOAWAY:
            last, error = struct.unpack_from(">II", payload)
            if last & 0x7FFFFFFF < 1:
                raise Status(14, f"containerd went away (HTTP/2 error {error}: {payload[8:].decode(errors='replace')})")
        elif stream != 1:
            return
        elif kind == RST_STREAM:
            raise Status(1 if payload == b"\0\0\0\x08" else 13, f"the stream was reset (HTTP/2 error "
                                                               f"{int.from_bytes(payload, 'big')})")
        elif kind in (DATA, HEADERS, CONTINUATION):
            if flags & PADDED and kind != CONTINUATION:
                payload = payload[1: len(payload) - payload[0]]
            if kind == DATA:
                self.body += payload
                self.ended = bool(flags & END_STREAM)
                return
            if kind == HEADERS:
                self.closing = bool(flags & END_STREAM)  # once the block is whole: it may go on in CONTINUATIONs
                if flags & PRIORITY:
                    payload = payload[5:]
            self.block += payload
            if flags & END_HEADERS:
                self.decode(self.block)
                self.block = b""
                self.ended = self.closing

    def decode(self, block: bytes) -> None:
        """A header block's fields into self.headers (HPACK)."""
        at = 0
        while at < len(block):
            byte = block[at]
            if byte & 0x80:  # an indexed field
                index, at = _integer(block, at, 7)
                self.headers.__setitem__(*self.entry(index))
                continue
            if byte & 0xE0 == 0x20:  # a new size of the dynamic table
                self.table_max, at = _integer(block, at, 5)
                self.evict(0)
                continue
            indexed = byte & 0xC0 == 0x40
            index, at = _integer(block, at, 6 if indexed else 4)
            if index:
                name = self.entry(index)[0]
            else:
                name, at = _string(block, at)
            value, at = _string(block, at)
            self.headers[name] = value
            if indexed:
                self.evict(len(name) + len(value) + 32)
                self.dynamic.insert(0, (name, value))
                self.table_size += len(name) + len(value) + 32

    def entry(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= len(STATIC):
            return STATIC[index - 1]
        if 0 <= index - len(STATIC) - 1 < len(self.dynamic):
            return self.dynamic[index - len(STATIC) - 1]
        raise Status(13, f"a header refers to entry {index} of HPACK's tables, which has none")

    def evict(self, room: int) -> None:
        while self.dynamic and self.table_size + room > self.table_max:
            name, value = self.dynamic.pop()
            self.table_size -= len(name) + len(value) + 32


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def _literal(name: bytes, value: bytes) -> bytes:
    """A field as a literal not added to the table, new name and value, no Huffman code."""
    return b"\0" + _encode_integer(len(name), 7) + name + _encode_integer(len(value), 7) + value


def _encode_integer(value: int, bits: int, first: int = 0) -> bytes:
    top = (1 << bits) - 1
    if value < top:
        return bytes((first | value,))
    out, value = bytearray((first | top,)), value - top
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _integer(block: bytes, at: int, bits: int) -> tuple[int, int]:
    top = (1 << bits) - 1
    value = block[at] & top
    at += 1
    if value < top:
        return value, at
    shift = 0
    while True:
        byte = block[at]
        at += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def _string(block: bytes, at: int) -> tuple[bytes, int]:
    huffman = block[at] & 0x80
    length, at = _integer(block, at, 7)
    raw = block[at: at + length]
    return (_unhuffman(raw) if huffman else raw), at + length


def _unhuffman(data: bytes) -> bytes:
    if not _huffman:
        code, previous = -1, 0
        for symbol in sorted(range(257), key=lambda s: (_LENGTHS[s], s)):
            code = (code + 1) << (_LENGTHS[symbol] - previous) if code >= 0 else 0
            previous = _LENGTHS[symbol]
            _huffman[(previous, code)] = symbol
    out = bytearray()
    code = length = 0
    for byte in data:
        for shift in range(7, -1, -1):
            code, length = code << 1 | (byte >> shift) & 1, length + 1
            symbol = _huffman.get((length, code))
            if symbol is not None:
                if symbol == 256:
                    raise Status(13, "a header with HPACK's end-of-string code in it")
                out.append(symbol)
                code = length = 0
    return bytes(out)  # what is left is padding: at most 7 one-bits
