"""Safe extraction of one layer tarball into a directory, with OCI whiteouts turned into overlayfs form.

Every path is resolved one component at a time from an open directory fd with O_NOFOLLOW, so no entry,
however hostile, can make a write land outside the layer: a symlink on the way is refused, never followed.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import stat
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from orchestr.errors import RuntimeFailure, TerminalFailure

CHUNK = 1 << 20
OPAQUE = ".wh..wh..opq"
WHITEOUT = ".wh."
OVERLAY_OPAQUE = "trusted.overlay.opaque"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def compression(head: bytes) -> str | None:
    """'gzip', 'zstd' or None (plain tar), from a blob's first bytes."""
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    return None


def decompressor(f: BinaryIO, kind: str | None, what: str) -> BinaryIO:
    """A reader of the uncompressed stream of f."""
    if kind == "gzip":
        return _Gunzip(f)  # type: ignore[return-value]
    if kind == "zstd":
        try:
            import zstandard
        except ImportError:
            raise TerminalFailure(f"{what}: zstd-compressed layers need the zstandard module") from None
        return zstandard.ZstdDecompressor().stream_reader(f, read_size=CHUNK)  # type: ignore[return-value]
    return f


class _Gunzip:
    """Inflates a gzip stream of one or more members in large steps; zlib checks each member's CRC and length.

    Large steps matter: every call into zlib releases the GIL, and small ones make parallel unpacks crawl.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.pending = b""

    def read(self, n: int = -1) -> bytes:
        while True:
            if self.z.eof:
                rest = (self.z.unused_data or self.raw.read(CHUNK)).lstrip(b"\0")  # zero padding may follow
                while not rest:
                    more = self.raw.read(CHUNK)
                    if not more:
                        return b""
                    rest = more.lstrip(b"\0")
                self.z, self.pending = zlib.decompressobj(16 + zlib.MAX_WBITS), rest
            if self.z.unconsumed_tail:
                data = self.z.unconsumed_tail
            elif self.pending:
                data, self.pending = self.pending, b""
            else:
                data = self.raw.read(CHUNK)
                if not data:
                    raise EOFError("the compressed stream ends early")
            out = self.z.decompress(data, n if n > 0 else 4 * CHUNK)
            if out:
                return out


class HashingReader:
    """Counts and hashes everything read through it, reading ahead in large steps."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.sha, self.size = raw, hashlib.sha256(), 0
        self._buf, self._pos = memoryview(b""), 0

    def read(self, n: int = -1) -> bytes:
        if self._pos == len(self._buf):
            data = self.raw.read(4 * CHUNK)
            self.sha.update(data)
            self.size += len(data)
            self._buf, self._pos = memoryview(data), 0
        end = len(self._buf) if n < 0 else min(len(self._buf), self._pos + n)
        data = self._buf[self._pos:end].tobytes()
        self._pos = end
        return data

    def drain(self) -> None:
        while self.read(4 * CHUNK):
            pass

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha.hexdigest()}"


def unpack(blob: Path, blob_digest: str, diff_id: str, dest: Path, what: str) -> int:
    """Extract the layer blob into the empty directory dest; return the uncompressed size.

    The uncompressed stream must hash to diff_id. A plain tar blob was verified when stored, so its digest
    stands for the stream and its data is copied in the kernel; a compressed one is hashed while read.
    """
    with open(blob, "rb") as f:
        kind = compression(f.read(4))
        f.seek(0)
        root = os.open(dest, _DIR_FLAGS)
        try:
            if kind is None:
                if blob_digest != diff_id:
                    raise RuntimeFailure(f"{what}: uncompressed layer {blob_digest} does not match diff-id {diff_id}")
                src = f.fileno()
                with _open_tar(f, "r:", what) as tar:

                    def copy(m: tarfile.TarInfo, fd: int) -> None:
                        if m.issparse():
                            _copy_stream(tar, m, fd)
                        else:
                            _copy_range(src, m.offset_data, m.size, fd)

                    _Extractor(root, what, copy, tar).run()
                return os.fstat(src).st_size
            reader = HashingReader(decompressor(f, kind, what))
            try:
                with _open_tar(reader, "r|", what) as tar:
                    _Extractor(root, what, lambda m, fd: _copy_stream(tar, m, fd), tar).run()
                reader.drain()
            except (EOFError, zlib.error) as e:
                raise RuntimeFailure(f"{what}: corrupt {kind} stream: {e}") from None
            if reader.digest != diff_id:
                raise RuntimeFailure(f"{what}: uncompressed content is {reader.digest}, the image says {diff_id}")
            return reader.size
        finally:
            os.close(root)


def unpack_region(fd: int, offset: int, size: int, diff_id: str, dest: Path, what: str) -> bytes | None:
    """Extract the uncompressed layer tar at [offset, offset + size) of fd into the empty directory dest, in
    one pass that hashes every byte it reads: the layer is made of exactly the bytes that match diff_id,
    whatever happens to the file meanwhile. Raises when they do not match.

    Returns the layer's tar-split: what, with the files now in dest, gives the tar back byte for byte (the
    headers, padding and end blocks, and where each file's data goes), so no copy of the tar need be kept;
    None when the files cannot give it back (an entry later replaces a file whose data it would need).
    Raises Unsplittable for a layer this pass cannot read (sparse files): unpack a stored blob then.
    """
    reader = _SplitReader(fd, offset, size)
    root = os.open(dest, _DIR_FLAGS)
    try:
        with _open_tar(reader, "r:", what) as tar:

            def copy(m: tarfile.TarInfo, out: int) -> None:
                if m.issparse():
                    raise Unsplittable(f"{what}: entry {m.name!r} is a sparse file")
                reader.file_data(m, out, "/".join(_clean(m.name, what)))

            _Extractor(root, what, copy, tar).run()
            members = list(tar.members)
        reader.finish()
    finally:
        os.close(root)
    if reader.digest != diff_id:
        raise RuntimeFailure(f"{what}: content is {reader.digest}, expected {diff_id}; refused")
    index = {id(m): i for i, m in enumerate(members)}
    refs = [(path, index[id(m)]) for m, path in reader.files]
    if any(len(path.encode("utf-8", "surrogateescape")) > MAX_SPLIT_PATH for path, _ in refs):
        return None
    return reader.split() if _files_stay(members, refs, what) else None


class Unsplittable(Exception):
    """A layer unpack_region cannot take in one pass."""


class _SplitReader(io.RawIOBase):
    """[offset, offset + size) of fd, read forward only, all of it hashed; tarfile reads the headers through
    it, file_data copies each file's data to its file. Every byte that is not file data is kept for the
    tar-split, with a reference to the file for each one's data."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self.fd, self.offset, self.size, self.pos = fd, offset, size, 0
        self.sha = hashlib.sha256()
        self.raw = bytearray()  # kept since the last file's data
        self.records: list[bytes] = [SPLIT_MAGIC, struct.pack("<Q", size)]
        self.files: list[tuple[tarfile.TarInfo, str]] = []  # each member whose data went to a file, and where
        self._buf = bytearray(CHUNK)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        target = pos if whence == 0 else self.pos + pos if whence == 1 else self.size + pos
        if target < self.pos:
            raise Unsplittable(f"a backward seek in a layer ({self.pos} -> {target})")
        while self.pos < target and self._take(target - self.pos, keep=True):
            pass
        return self.pos

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        """Fills b whole unless the region ends: tarfile reads an extended header with one read() and takes
        what comes back as all of it."""
        view, filled = memoryview(b), 0
        while filled < len(view) and (data := self._take(len(view) - filled, keep=True)):
            view[filled:filled + len(data)] = data
            filled += len(data)
        return filled

    def _take(self, n: int, keep: bool) -> memoryview:
        n = max(0, min(n, self.size - self.pos, len(self._buf)))
        got = os.preadv(self.fd, [memoryview(self._buf)[:n]], self.offset + self.pos) if n else 0
        data = memoryview(self._buf)[:got]
        self.sha.update(data)
        if keep:
            self.raw += data
        self.pos += got
        return data

    def file_data(self, m: tarfile.TarInfo, out: int, path: str) -> None:
        """Copies member m's data, which starts here, to out; the tar-split refers to path for it."""
        if self.pos != m.offset_data:
            raise Unsplittable(f"entry {m.name!r}: its data is not where the reader is")
        self._flush_raw()
        name = path.encode("utf-8", "surrogateescape")
        self.records += [_FILE, struct.pack("<QH", m.size, len(name) & 0xFFFF), name]
        self.files.append((m, path))
        left = m.size
        while left:
            data = self._take(left, keep=False)
            if not data:
                raise RuntimeFailure(f"entry {m.name!r}: the layer ends inside its data")
            _write_all(out, data)
            left -= len(data)

    def finish(self) -> None:
        """Reads, hashes and keeps the rest (the end blocks and whatever follows)."""
        while self._take(self.size - self.pos, keep=True):
            pass
        self._flush_raw()

    def _flush_raw(self) -> None:
        if self.raw:
            self.records += [_RAW, struct.pack("<Q", len(self.raw)), bytes(self.raw)]
            self.raw = bytearray()

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha.hexdigest()}"

    def split(self) -> bytes:
        return zlib.compress(b"".join(self.records), 1)


SPLIT_MAGIC = b"orchestr tar-split 1\n"
_RAW, _FILE = b"R", b"F"
MAX_SPLIT_PATH = 3072  # a file's path as one open() can take it (PATH_MAX is 4096 with the layer's own)


def _files_stay(members: list[tarfile.TarInfo], refs: list[tuple[str, int]], what: str) -> bool:
    """Whether every file the tar-split refers to (path, index of its member) is, after extraction, what its
    entry wrote: no later entry (or whiteout) is at its path, nor a non-directory at one of its parents."""
    first = {path: i for path, i in refs}
    if len(first) != len(refs):
        return False
    under: dict[str, int] = {}  # a parent directory -> the first entry of a file under it
    for path, i in refs:
        parts = path.split("/")[:-1]
        for n in range(1, len(parts) + 1):
            parent = "/".join(parts[:n])
            under[parent] = min(under.get(parent, i), i)
    for i, m in enumerate(members):
        parts = _clean(m.name, what)
        if not parts or parts[-1] == OPAQUE or parts[-1].startswith(WHITEOUT + WHITEOUT):
            continue
        is_dir = m.isdir()
        if parts[-1].startswith(WHITEOUT):
            parts, is_dir = parts[:-1] + [parts[-1][len(WHITEOUT):]], False
        path = "/".join(parts)
        if first.get(path, i) < i or (not is_dir and under.get(path, i) < i):
            return False
    return True


def rebuild(diff: Path, split: bytes, what: str) -> tuple[int, Iterator[bytes]]:
    """(size, chunks) of the tar a tar-split and the layer files under diff give back."""
    data = zlib.decompress(split)
    if not data.startswith(SPLIT_MAGIC):
        raise RuntimeFailure(f"{what}: not a tar-split of this version")
    (size,) = struct.unpack_from("<Q", data, len(SPLIT_MAGIC))

    def chunks() -> Iterator[bytes]:
        pos = len(SPLIT_MAGIC) + 8
        while pos < len(data):
            kind, pos = data[pos:pos + 1], pos + 1
            if kind == _RAW:
                (n,) = struct.unpack_from("<Q", data, pos)
                yield data[pos + 8:pos + 8 + n]
                pos += 8 + n
                continue
            length, name_len = struct.unpack_from("<QH", data, pos)
            name = data[pos + 10:pos + 10 + name_len].decode("utf-8", "surrogateescape")
            pos += 10 + name_len
            fd = os.open(diff / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                while length:
                    chunk = os.read(fd, min(length, CHUNK))
                    if not chunk:
                        raise RuntimeFailure(f"{what}: the layer's {name} is shorter than when it was unpacked")
                    length -= len(chunk)
                    yield chunk
            finally:
                os.close(fd)

    return size, chunks()


def _open_tar(f: object, mode: str, what: str) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=f, mode=mode, bufsize=1 << 16)  # type: ignore[call-overload]
    except tarfile.TarError as e:
        raise RuntimeFailure(f"{what}: not a tar archive: {e}") from None


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def copy_file_data(src: int, offset: int, size: int, dst: int) -> int:
    """Appends size bytes of src from offset to dst, in the kernel where it can; returns how many there were
    (fewer when src ends first)."""
    copied = 0
    while size > 0:
        try:
            n = os.copy_file_range(src, dst, size, offset)
        except OSError as e:  # across filesystems on old kernels, or a filesystem that cannot
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            data = os.pread(src, min(size, CHUNK), offset)
            _write_all(dst, data)
            n = len(data)
        if n == 0:
            break
        offset, size, copied = offset + n, size - n, copied + n
    return copied


def _copy_range(src: int, offset: int, size: int, dst: int) -> None:
    if copy_file_data(src, offset, size, dst) != size:
        raise RuntimeFailure("layer tarball is truncated")


def _copy_stream(tar: tarfile.TarFile, member: tarfile.TarInfo, dst: int) -> None:
    src = tar.extractfile(member)
    assert src is not None
    while data := src.read(CHUNK):
        _write_all(dst, data)


def _clean(name: str, what: str) -> list[str]:
    if name.startswith("/"):
        raise TerminalFailure(f"{what}: entry {name!r} has an absolute path; layer paths are relative")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise TerminalFailure(f"{what}: entry {name!r} contains '..'; layer paths stay inside the layer")
    return parts


def _ns(t: float) -> int:
    return int(t) * 1_000_000_000 if float(t).is_integer() else int(t * 1e9)


class _Extractor:
    def __init__(
        self, root: int, what: str, copy: Callable[[tarfile.TarInfo, int], None], tar: tarfile.TarFile
    ) -> None:
        self.root, self.what, self.copy, self.tar = root, what, copy, tar
        self.dirs: dict[str, int] = {}  # open fds of directories already walked, by relative path
        self.dir_times: dict[str, int] = {}

    def run(self) -> None:
        try:
            while True:
                try:
                    member = self.tar.next()
                except tarfile.TarError as e:
                    raise RuntimeFailure(f"{self.what}: corrupt tar archive: {e}") from None
                if member is None:
                    break
                try:
                    self.entry(member)
                except tarfile.TarError as e:
                    raise RuntimeFailure(f"{self.what}: entry {member.name!r}: corrupt tar data: {e}") from None
                except OSError as e:
                    if e.errno is None:
                        raise
                    raise RuntimeFailure(f"{self.what}: entry {member.name!r}: {e.strerror}") from None
            self.set_dir_times()
        finally:
            for fd in self.dirs.values():
                os.close(fd)

    # -- walking ---------------------------------------------------------------------
    def walk(self, parts: list[str], name: str, create: bool = True) -> int:
        """The fd of the directory parts, each component opened without following symlinks."""
        fd, path = self.root, ""
        for comp in parts:
            path = f"{path}/{comp}" if path else comp
            cached = self.dirs.get(path)
            if cached is not None:
                fd = cached
                continue
            try:
                child = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(comp, 0o755, dir_fd=fd)
                child = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise TerminalFailure(
                        f"{self.what}: entry {name!r} goes through {path!r}, which is a symlink or not a directory"
                    ) from None
                raise
            if len(self.dirs) >= 512:
                self.forget("")
            self.dirs[path] = fd = child
        return fd

    def forget(self, path: str) -> None:
        """Drop cached fds at and under path, which is being replaced."""
        for key in [k for k in self.dirs if not path or k == path or k.startswith(path + "/")]:
            os.close(self.dirs.pop(key))

    def remove(self, parent: int, base: str, path: str) -> None:
        try:
            st = os.stat(base, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        self.forget(path)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(base, dir_fd=parent)
        else:
            os.unlink(base, dir_fd=parent)

    # -- entries ---------------------------------------------------------------------
    def entry(self, m: tarfile.TarInfo) -> None:
        parts = _clean(m.name, self.what)
        if not parts:
            return  # the layer's own root: overlayfs takes the root's attributes from the upper dir
        *parents, base = parts
        path = "/".join(parts)
        parent = self.walk(parents, m.name)
        if base == OPAQUE:
            os.setxattr(parent, OVERLAY_OPAQUE, b"y")
            return
        if base.startswith(WHITEOUT):
            if base.startswith(WHITEOUT + WHITEOUT):
                return  # other AUFS metadata: nothing to apply
            hidden = base[len(WHITEOUT):]
            self.remove(parent, hidden, "/".join(parents + [hidden]))
            os.mknod(hidden, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)
            return
        if m.isdir():
            self.directory(parent, base, path, m)
            return
        self.remove(parent, base, path)
        if m.isreg():
            fd = os.open(base, _FILE_FLAGS, 0o600, dir_fd=parent)
            try:
                self.copy(m, fd)
                self.attributes(fd, m)
            finally:
                os.close(fd)
        elif m.issym():
            os.symlink(m.linkname, base, dir_fd=parent)
            os.chown(base, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
            os.utime(base, ns=(_ns(m.mtime),) * 2, dir_fd=parent, follow_symlinks=False)
        elif m.islnk():
            self.hardlink(parent, base, m)
        elif m.isfifo():
            os.mkfifo(base, 0o600, dir_fd=parent)
            self.attributes_at(parent, base, m)
        elif m.ischr() and m.devmajor == 0 and m.devminor == 0:
            os.mknod(base, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)  # already an overlayfs whiteout
        elif m.ischr() or m.isblk():
            raise TerminalFailure(f"{self.what}: entry {m.name!r} is a device node; layers may not carry devices")
        else:
            raise TerminalFailure(f"{self.what}: entry {m.name!r} has unsupported tar type {m.type!r}")

    def directory(self, parent: int, base: str, path: str, m: tarfile.TarInfo) -> None:
        try:
            st = os.stat(base, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            self.remove(parent, base, path)
            st = None
        if st is None:
            os.mkdir(base, 0o700, dir_fd=parent)
        fd = self.dirs.get(path)
        if fd is None:
            fd = self.walk(path.split("/"), m.name)
        self.attributes(fd, m, times=False)
        self.dir_times[path] = _ns(m.mtime)

    def hardlink(self, parent: int, base: str, m: tarfile.TarInfo) -> None:
        target = _clean(m.linkname, self.what)
        if not target:
            raise TerminalFailure(f"{self.what}: hardlink {m.name!r} points at the layer root")
        try:
            tparent = self.walk(target[:-1], m.name, create=False)
            os.link(target[-1], base, src_dir_fd=tparent, dst_dir_fd=parent, follow_symlinks=False)
        except (FileNotFoundError, PermissionError, IsADirectoryError):
            raise TerminalFailure(
                f"{self.what}: hardlink {m.name!r} points at {m.linkname!r}, which is not a file earlier in the layer"
            ) from None

    def attributes(self, fd: int, m: tarfile.TarInfo, times: bool = True) -> None:
        os.fchown(fd, m.uid, m.gid)
        os.fchmod(fd, m.mode & 0o7777)  # after chown, which clears setuid and setgid
        for key, value in m.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                name = key[len("SCHILY.xattr."):]
                if name.startswith("trusted.overlay."):
                    continue  # overlayfs metadata comes from whiteouts only, never from the archive
                try:
                    os.setxattr(fd, name, value.encode("utf-8", "surrogateescape"))
                except OSError as e:
                    if e.errno != errno.EOPNOTSUPP:
                        raise RuntimeFailure(f"{self.what}: entry {m.name!r}: cannot set xattr {name}: {e}") from None
        if times:
            os.utime(fd, ns=(_ns(m.mtime),) * 2)

    def attributes_at(self, parent: int, base: str, m: tarfile.TarInfo) -> None:
        os.chown(base, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
        os.chmod(base, m.mode & 0o7777, dir_fd=parent)
        os.utime(base, ns=(_ns(m.mtime),) * 2, dir_fd=parent, follow_symlinks=False)

    def set_dir_times(self) -> None:
        # last, since creating children changes a directory's mtime
        self.forget("")
        for path, ns in self.dir_times.items():
            try:
                fd = self.walk(path.split("/"), path, create=False)
            except (FileNotFoundError, RuntimeFailure):
                continue  # replaced by a later entry
            os.utime(fd, ns=(ns, ns))
