"""Layer extraction in the native image store: hostile archives, whiteouts, attributes, crash leftovers."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import struct
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestr.errors import RuntimeFailure
from orchestr.testing import images as mkimage
from orchestr_native.images import unpack as unpack_module
from orchestr_native.images.locks import try_flock
from orchestr_native.images.store import ImageStore

pytestmark = pytest.mark.anyio

# from layers/<hex>.tmp-*/diff back up to the test's tmp dir, where the sentinel lives
UP = "../../../.."


@pytest.fixture
def store(tmp_path) -> ImageStore:
    return ImageStore(tmp_path / "store")


@pytest.fixture
def sentinel(tmp_path) -> Path:
    """A host directory next to the store that no layer may touch."""
    path = tmp_path / "sentinel"
    path.mkdir()
    (path / "file").write_text("original\n")
    return path


def snapshot(root: Path, skip: Path) -> dict[str, tuple]:
    """Every path under root outside skip, with its type, mode, owner and content digest."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None
            seen[str(p)] = (st.st_mode, st.st_uid, st.st_gid, st.st_nlink, digest)
    return seen


def entry(name: str, type_: bytes, **attrs) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = type_, attrs.pop("mode", 0o644), mkimage.EPOCH
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


async def unpack(store: ImageStore, layer: mkimage.Layer, compress: bool = False, diff_id: str | None = None) -> Path:
    raw = layer.bytes()
    diff_id = diff_id or f"sha256:{hashlib.sha256(raw).hexdigest()}"
    blob = store.put_bytes(gzip.compress(raw, mtime=0) if compress else raw, "test layer")
    await store.ensure_layer(blob, diff_id, "test layer")
    return store.layer_dir(diff_id) / "diff"


# Each case builds a layer aimed at the sentinel directory and the message its refusal must carry.
HOSTILE: dict[str, tuple[Callable[[Path], mkimage.Layer], str]] = {
    "absolute path": (
        lambda s: mkimage.Layer().raw(entry(str(s / "pwned"), tarfile.REGTYPE), b"x"),
        "absolute path",
    ),
    "dot-dot": (
        lambda s: mkimage.Layer().raw(entry(f"{UP}/sentinel/pwned", tarfile.REGTYPE), b"x"),
        r"contains '\.\.'",
    ),
    "dot-dot inside": (
        lambda s: mkimage.Layer().dir("a").raw(entry(f"a/{UP}/../sentinel/pwned", tarfile.REGTYPE), b"x"),
        r"contains '\.\.'",
    ),
    "write through escaping symlink": (
        lambda s: mkimage.Layer().symlink("esc", f"{UP}/sentinel").file("esc/pwned", "x"),
        "goes through 'esc', which is a symlink",
    ),
    "write through absolute symlink to the host": (
        lambda s: mkimage.Layer().dir("etc").symlink("etc/host", str(s)).file("etc/host/pwned", "x"),
        "goes through 'etc/host', which is a symlink",
    ),
    "hardlink to outside": (
        lambda s: mkimage.Layer().raw(entry("hl", tarfile.LNKTYPE, linkname=f"{UP}/sentinel/file")),
        r"contains '\.\.'",
    ),
    "hardlink through a symlink to the host": (
        lambda s: mkimage.Layer().symlink("s", str(s)).hardlink("hl", "s/file"),
        "goes through 's', which is a symlink",
    ),
    "hardlink to an absolute path": (
        lambda s: mkimage.Layer().raw(entry("hl", tarfile.LNKTYPE, linkname=str(s / "file"))),
        "absolute path",
    ),
    "character device": (
        lambda s: mkimage.Layer().raw(entry("null", tarfile.CHRTYPE, devmajor=1, devminor=3)),
        "device node",
    ),
    "block device": (
        lambda s: mkimage.Layer().raw(entry("disk", tarfile.BLKTYPE, devmajor=8, devminor=0)),
        "device node",
    ),
    "directory replaced by a symlink, then written under": (
        lambda s: mkimage.Layer().dir("d").file("d/ok", "ok").symlink("d", str(s)).file("d/pwned", "x"),
        "goes through 'd', which is a symlink",
    ),
}


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "gzip"])
@pytest.mark.parametrize("case", list(HOSTILE))
async def test_hostile_layer_is_refused_and_nothing_leaks(store, sentinel, tmp_path, case, compress):
    build, message = HOSTILE[case]
    before = snapshot(tmp_path, store.root)
    with pytest.raises(RuntimeFailure, match=message) as raised:
        await unpack(store, build(sentinel), compress)
    assert not raised.value.retryable  # the same layer is refused again: a controller need not retry
    assert snapshot(tmp_path, store.root) == before
    assert not Path("/pwned").exists()
    assert os.listdir(store.layers) == []  # no half-unpacked layer is left looking complete


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "gzip"])
async def test_file_written_over_a_symlink_replaces_the_symlink(store, sentinel, tmp_path, compress):
    before = snapshot(tmp_path, store.root)
    layer = mkimage.Layer().symlink("f", str(sentinel / "file")).file("f", "inside\n")
    root = await unpack(store, layer, compress)
    assert snapshot(tmp_path, store.root) == before
    assert not (root / "f").is_symlink()
    assert (root / "f").read_text() == "inside\n"


async def test_symlinks_are_kept_as_written_without_being_followed(store, sentinel, tmp_path):
    layer = mkimage.Layer().dir("etc").symlink("etc/localtime", "/usr/share/zoneinfo/UTC").symlink("up", f"{UP}/x")
    root = await unpack(store, layer)
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/UTC"
    assert os.readlink(root / "up") == f"{UP}/x"


async def test_whiteouts_become_overlayfs_whiteouts(store):
    layer = mkimage.Layer().dir("data").whiteout("data/gone").opaque("cache").whiteout("top")
    root = await unpack(store, layer)
    for path in (root / "data/gone", root / "top"):
        st = path.lstat()
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0), path
        assert (st.st_uid, st.st_gid) == (0, 0)
    assert os.getxattr(root / "cache", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(root / "cache")) == []
    assert not any(n.startswith(".wh.") for _, dirs, files in os.walk(root) for n in dirs + files)


async def test_overlay_xattrs_in_the_archive_are_ignored(store):
    info = entry("d", tarfile.DIRTYPE, mode=0o755)
    info.pax_headers = {"SCHILY.xattr.trusted.overlay.redirect": "/elsewhere", "SCHILY.xattr.user.kept": "yes"}
    root = await unpack(store, mkimage.Layer().raw(info))
    assert os.getxattr(root / "d", "user.kept") == b"yes"
    with pytest.raises(OSError):
        os.getxattr(root / "d", "trusted.overlay.redirect")


# a VFS capability set (revision 2, effective) granting cap_net_bind_service
CAP = struct.pack("<5I", 0x02000001, 1 << 10, 0, 0, 0)


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "gzip"])
async def test_ownership_modes_xattrs_and_times_are_kept(store, compress):
    suid = entry("bin/su", tarfile.REGTYPE, mode=0o4755, uid=1000, gid=1000)
    suid.pax_headers = {"SCHILY.xattr.user.note": "caf\u00e9", "SCHILY.xattr.security.capability": CAP.decode()}
    link = entry("home/app/link", tarfile.SYMTYPE, mode=0o777, uid=1000, gid=33, linkname="../../bin/su")
    layer = (
        mkimage.Layer().dir("bin").dir("tmp", 0o1777).dir("home").dir("home/app", 0o2750, 1000, 1000)
        .raw(suid, b"#!/bin/sh\n").raw(link).hardlink("bin/su2", "bin/su")
        .raw(entry("run/fifo", tarfile.FIFOTYPE, mode=0o620, uid=33, gid=33))
    )
    root = await unpack(store, layer, compress)
    st = (root / "bin/su").lstat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o4755, 1000, 1000)
    assert st.st_mtime == mkimage.EPOCH and st.st_nlink == 2
    assert (root / "bin/su2").lstat().st_ino == st.st_ino
    assert os.getxattr(root / "bin/su", "user.note") == "caf\u00e9".encode()
    assert os.getxattr(root / "bin/su", "security.capability") == CAP
    assert stat.S_IMODE((root / "tmp").lstat().st_mode) == 0o1777
    home = (root / "home/app").lstat()
    assert (stat.S_IMODE(home.st_mode), home.st_uid, home.st_gid) == (0o2750, 1000, 1000)
    assert home.st_mtime == mkimage.EPOCH  # set after its children were created
    lst = (root / "home/app/link").lstat()
    assert stat.S_ISLNK(lst.st_mode) and (lst.st_uid, lst.st_gid) == (1000, 33) and lst.st_mtime == mkimage.EPOCH
    fifo = (root / "run/fifo").lstat()
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o620 and fifo.st_uid == 33
    assert (root / "run").lstat().st_uid == 0  # an implied parent directory


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "gzip"])
async def test_diff_id_mismatch_is_refused(store, compress):
    wrong = "sha256:" + "0" * 64
    with pytest.raises(RuntimeFailure, match="sha256:0000"):
        await unpack(store, mkimage.Layer().file("a", "a"), compress, diff_id=wrong)
    assert os.listdir(store.layers) == []


async def test_gzip_of_several_members_with_zero_padding_unpacks(store):
    raw = mkimage.Layer().file("a", "a" * 100000).file("b", "b\n").bytes()
    cut = len(raw) // 3
    blob = store.put_bytes(gzip.compress(raw[:cut]) + gzip.compress(raw[cut:]) + bytes(1024), "test layer")
    diff_id = f"sha256:{hashlib.sha256(raw).hexdigest()}"
    await store.ensure_layer(blob, diff_id, "test layer")
    root = store.layer_dir(diff_id) / "diff"
    assert (root / "a").read_text() == "a" * 100000 and (root / "b").read_text() == "b\n"


async def test_corrupt_gzip_layer_is_refused(store):
    raw = gzip.compress(mkimage.Layer().file("a", "a" * 10000).bytes())
    blob = store.put_bytes(raw[: len(raw) // 2], "test layer")
    with pytest.raises(RuntimeFailure, match="corrupt"):
        await store.ensure_layer(blob, "sha256:" + "1" * 64, "test layer")
    assert os.listdir(store.layers) == []


def test_leftovers_of_a_crash_are_removed_on_open_unless_still_being_written(tmp_path):
    store = ImageStore(tmp_path / "store")
    dead, busy = "a" * 64, "b" * 64
    (store.layers / f"{dead}.tmp-0001" / "diff").mkdir(parents=True)
    (store.layers / f"{busy}.tmp-0002" / "diff").mkdir(parents=True)
    (store.blobs / f"{dead}.tmp-0003").write_bytes(b"partial")
    held = try_flock(store.locks.path(f"layer-{busy}"))  # another process unpacking right now
    try:
        ImageStore(tmp_path / "store")
        assert sorted(os.listdir(store.layers)) == [f"{busy}.tmp-0002"]
        assert os.listdir(store.blobs) == []
    finally:
        os.close(held)
    ImageStore(tmp_path / "store")
    assert os.listdir(store.layers) == []


# -- image bombs: small blobs that would unpack to a full disk or memory ------------------------------

def _sparse_layer(tmp_path: Path, size: int) -> bytes:
    """A GNU tar layer holding one sparse file of size bytes, nearly all a hole: a few KiB of tar."""
    root = tmp_path / "sparse-root"
    root.mkdir()
    with open(root / "holes", "wb") as f:
        f.truncate(size)
        f.write(b"start")
    out = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "--format=gnu", "-C", str(root), "-cf", str(out), "holes"], check=True)
    return out.read_bytes()


def _pax_chain(n: int) -> mkimage.Layer:
    """n extended headers in a row before one file: tarfile follows such a chain by recursion."""
    layer = mkimage.Layer()
    for _ in range(n):
        layer.raw(entry("PaxHeader", tarfile.XHDTYPE), b"16 comment=hey\n")
    return layer.file("f", "x")


def _global_headers(n: int, size: int) -> mkimage.Layer:
    """n global pax headers of size bytes each (tarfile keeps them all, for every later entry)."""
    layer = mkimage.Layer()
    for i in range(n):
        value = "x" * (size - 20)
        record = f"comment{i}={value}\n"
        length = len(record) + 8
        layer.raw(entry("GlobalHead", tarfile.XGLTYPE), f"{length + len(str(length)) - 7} {record}".encode())
    return layer.file("f", "x")


def _long_gnu_name(length: int) -> bytes:
    """A GNU tar layer whose one file has a name length bytes long, in a GNU long-name header."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = entry("n" * length, tarfile.REGTYPE)
        tar.addfile(info, io.BytesIO(b""))
    return buf.getvalue()


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "gzip"])
@pytest.mark.parametrize("kind", ["file", "sparse file"])
async def test_a_layer_unpacking_past_the_size_limit_is_refused_and_the_store_stays_usable(
        store, tmp_path, monkeypatch, compress, kind):
    size = 64 << 20
    raw = mkimage.Layer().file("zeros", bytes(size)).bytes() if kind == "file" else _sparse_layer(tmp_path, size)
    blob = gzip.compress(raw, mtime=0) if compress else raw
    if compress or kind == "sparse file":
        assert len(blob) < size // 256  # small as stored, large unpacked
    diff_id = f"sha256:{hashlib.sha256(raw).hexdigest()}"
    digest = store.put_bytes(blob, "test layer")
    monkeypatch.setenv(unpack_module.SIZE_ENV, "16Mi")
    with pytest.raises(RuntimeFailure) as refused:
        await store.ensure_layer(digest, diff_id, "bomb:1")
    assert str(refused.value) == ("bomb:1: a layer unpacks to more than 16Mi; refused "
                                  "(ORCHESTR_UNPACK_MAX_SIZE sets the limit)")
    assert os.listdir(store.layers) == []  # nothing half-unpacked
    monkeypatch.setenv(unpack_module.SIZE_ENV, "1Gi")  # a trusted image: the limit raised, the same layer unpacks
    await store.ensure_layer(digest, diff_id, "bomb:1")
    name = "zeros" if kind == "file" else "holes"
    assert (store.layer_dir(diff_id) / "diff" / name).stat().st_size == size


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "gzip"])
@pytest.mark.parametrize("kind", ["entries", "implied directories"])
async def test_a_layer_of_too_many_entries_is_refused(store, monkeypatch, compress, kind):
    layer = mkimage.Layer()
    if kind == "entries":
        for i in range(1500):
            layer.file(f"f{i}", b"")
    else:  # ten files, each under 150 directories no entry names
        for i in range(10):
            layer.file("/".join(f"d{i}.{j}" for j in range(150)) + "/f", b"")
    monkeypatch.setenv(unpack_module.ENTRIES_ENV, "1000")
    with pytest.raises(RuntimeFailure, match=r"^test layer: a layer has more than 1000 entries; refused "
                                             r"\(ORCHESTR_UNPACK_MAX_ENTRIES sets the limit\)$"):
        await unpack(store, layer, compress)
    assert os.listdir(store.layers) == []  # nothing half-unpacked


HEADER_BOMBS: dict[str, tuple[Callable[[], bytes], str]] = {
    "a huge pax record": (
        lambda: mkimage.Layer().raw(entry("f", tarfile.REGTYPE, pax_headers={"comment": "x" * (2 << 20)}), b"").bytes(),
        r"an entry's extended headers take more than 1Mi; refused \(ORCHESTR_UNPACK_MAX_HEADER sets the limit\)$",
    ),
    "a huge GNU long name": (
        lambda: _long_gnu_name(2 << 20),
        r"an entry's extended headers take more than 1Mi",
    ),
    "global pax headers adding up": (
        lambda: _global_headers(4, 400 << 10).bytes(),
        r"an entry's extended headers take more than 1Mi",
    ),
    "a chain of pax headers": (
        lambda: _pax_chain(400).bytes(),
        r"an entry has more than 16 extended headers; refused$",
    ),
}


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "gzip"])
@pytest.mark.parametrize("case", list(HEADER_BOMBS))
async def test_a_layer_with_huge_headers_is_refused_at_the_default_limit(store, monkeypatch, case, compress):
    monkeypatch.delenv(unpack_module.HEADER_ENV, raising=False)
    build, message = HEADER_BOMBS[case]
    raw = build()
    blob = store.put_bytes(gzip.compress(raw, mtime=0) if compress else raw, "test layer")
    with pytest.raises(RuntimeFailure, match=f"^test layer: {message}"):
        await store.ensure_layer(blob, f"sha256:{hashlib.sha256(raw).hexdigest()}", "test layer")
    assert os.listdir(store.layers) == []  # nothing half-unpacked


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "gzip"])
async def test_a_path_too_deep_to_remove_is_refused(store, compress):
    with pytest.raises(RuntimeFailure, match=r"^test layer: entry 'd/d/d.*\.\.\. is 601 levels deep; "
                                             r"more than 512 is refused$"):
        await unpack(store, mkimage.Layer().file("d/" * 600 + "f", b""), compress)
    assert os.listdir(store.layers) == []


@pytest.mark.parametrize("value", ["lots", "0", "-1"])
def test_a_bad_limit_is_named(tmp_path, monkeypatch, value):
    monkeypatch.setenv(unpack_module.SIZE_ENV, value)
    with pytest.raises(RuntimeFailure, match=rf"^ORCHESTR_UNPACK_MAX_SIZE: expected a quantity like 8Gi, got '{value}'$"):
        unpack_module.Limits.from_env()
