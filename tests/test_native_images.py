"""The native runtime's image store: references, imports, exports, listing, removal and collection."""

from __future__ import annotations

import gzip
import io
import hashlib
import json
import os
import subprocess
import tarfile
from pathlib import Path

import anyio
import pytest
from conftest import TEST_IMAGE

from orchestr.config import Config
from orchestr.errors import Conflict, NotFound, RuntimeFailure
from orchestr.model import ContainerSpec
from orchestr.runtime import Runtime
from orchestr.testing import images as mkimage
from orchestr.registry import platform
from orchestr.registry.reference import familiar, parse
from orchestr_native.images import unpack
from orchestr_native.runtime import NativeRuntime, _containers_module

LAYERED = "orchestr-test/layered:v1"


@pytest.fixture
def runtime(tmp_path) -> NativeRuntime:
    return NativeRuntime(Config(state_dir=tmp_path / "state"))


@pytest.fixture(scope="module")
def layered_archive(tmp_path_factory) -> Path:
    """busybox, then a layer with files, then one deleting a file and making a directory opaque."""
    path = tmp_path_factory.mktemp("images") / "layered.tar"
    files = (
        mkimage.Layer().dir("data").file("data/keep", "keep\n").file("data/gone", "gone\n")
        .dir("opq").file("opq/old", "old\n")
    )
    changes = mkimage.Layer().whiteout("data/gone").opaque("opq").file("opq/new", "new\n")
    mkimage.write_docker_archive(
        path, [mkimage.busybox_layer().bytes(), files.bytes(), changes.bytes()], [LAYERED],
        created_by=["busybox", "ADD data", "RUN rm data/gone"],
    )
    return path


def archive_config(path: Path) -> dict:
    with tarfile.open(path) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        return json.load(tar.extractfile(manifest[0]["Config"]))


def gzip_layers(src: Path, dst: Path) -> None:
    """The same docker-archive with every layer gzip-compressed, as `docker save | ...` tools may write."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin:
            data = tin.extractfile(member).read() if member.isreg() else None
            if member.name.endswith("layer.tar"):
                data = gzip.compress(data, mtime=0)
                member.size = len(data)
            tout.addfile(member, None if data is None else io.BytesIO(data))


def test_runtime_satisfies_the_protocol(runtime):
    assert isinstance(runtime, Runtime)
    assert runtime.name == "native"


@pytest.mark.parametrize("ref, full", [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest"),
    ("org/app:v2", "docker.io/org/app:v2"),
    ("localhost/app", "localhost/app:latest"),
    ("localhost:5000/x", "localhost:5000/x:latest"),
    ("127.0.0.1:5000/a/b:t", "127.0.0.1:5000/a/b:t"),
    ("ghcr.io/o/r", "ghcr.io/o/r:latest"),
    ("busybox@sha256:" + "a" * 64, "docker.io/library/busybox@sha256:" + "a" * 64),
    ("r.example:443/x:t@sha256:" + "b" * 64, "r.example:443/x@sha256:" + "b" * 64),
])
def test_references_normalise_as_docker_does(ref, full):
    assert str(parse(ref)) == full


def test_familiar_names_drop_the_default_registry():
    assert familiar("docker.io/library/busybox:latest") == "busybox:latest"
    assert familiar("docker.io/org/app:v2") == "org/app:v2"
    assert familiar("localhost:5000/x:latest") == "localhost:5000/x:latest"


@pytest.mark.parametrize("ref", ["Busybox", "busybox:", "bad tag:x!", "a@sha256:short", "a//b", ""])
def test_invalid_references_are_refused(ref):
    with pytest.raises(RuntimeFailure, match="invalid image reference") as raised:
        parse(ref)
    assert not raised.value.retryable


def test_platform_selection_prefers_this_machine_and_fitting_variants():
    index = [
        {"digest": "arm", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"digest": "amd", "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "arm64", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"digest": "win", "platform": {"os": "windows", "architecture": "amd64"}},
    ]
    assert platform.select(index, "x", platform.Platform("linux", "amd64"))["digest"] == "amd"
    assert platform.select(index, "x", platform.Platform("linux", "arm64", "v8"))["digest"] == "arm64"
    assert platform.select(index, "x", platform.Platform("linux", "arm", "v8"))["digest"] == "arm"
    with pytest.raises(NotFound, match="no image for linux/s390x"):
        platform.select(index, "x", platform.Platform("linux", "s390x"))


@pytest.mark.anyio
async def test_import_docker_archive_then_list_inspect_and_history(runtime, busybox_archive):
    reports = []
    [image] = await runtime.import_image(busybox_archive, reports.append)
    config = archive_config(busybox_archive)
    assert image.references == ("orchestr-test/busybox:latest",)
    assert image.id.startswith("sha256:") and image.runtime == "native" and image.size > 1_000_000
    assert [i.id for i in await runtime.images()] == [image.id]
    assert {r.status for r in reports} >= {"extracting", "done"}

    inspect = await runtime.image_inspect(TEST_IMAGE)
    assert inspect["Id"] == image.id
    assert inspect["RepoTags"] == ["orchestr-test/busybox:latest"] and inspect["RepoDigests"] == []
    assert inspect["RootFS"] == {"Type": "layers", "Layers": config["rootfs"]["diff_ids"]}
    assert inspect["Config"]["Cmd"] == ["sh"] and inspect["Architecture"] == "amd64" and inspect["Os"] == "linux"
    assert inspect["Created"] == mkimage.CREATED and inspect["Size"] == image.size

    [step] = await runtime.image_history(TEST_IMAGE)
    assert step.created_by == "orchestr mkimage layer 0" and step.size == image.size and not step.empty_layer
    assert step.id == config["rootfs"]["diff_ids"][0]

    store = runtime.store
    [layer] = store.layer_paths(TEST_IMAGE)
    assert (layer / "bin/busybox").is_file() and os.readlink(layer / "bin/sh") == "busybox"
    assert store.image_config(image.id)["rootfs"]["diff_ids"] == config["rootfs"]["diff_ids"]
    # docker-archive layers are stored uncompressed, their blob digest being the diff-id
    assert store.has_blob(config["rootfs"]["diff_ids"][0])


@pytest.mark.anyio
async def test_names_ids_and_prefixes_resolve_to_the_image(runtime, busybox_archive):
    [image] = await runtime.import_image(busybox_archive)
    store = runtime.store
    for ref in (TEST_IMAGE, "orchestr-test/busybox", "docker.io/orchestr-test/busybox:latest", image.id,
                image.id.removeprefix("sha256:")[:12]):
        assert store.resolve(ref) == image.id
    for ref in ("orchestr-test/busybox:other", "nothere", "sha256:" + "f" * 64):
        with pytest.raises(NotFound):
            store.resolve(ref)
    assert await runtime.ensure_image(TEST_IMAGE) == (await runtime.images())[0]


@pytest.mark.anyio
async def test_gzip_layers_import_to_the_same_digests(runtime, busybox_archive, tmp_path):
    gz = tmp_path / "gz.tar"
    gzip_layers(busybox_archive, gz)
    [plain] = await runtime.import_image(busybox_archive)
    other = NativeRuntime(Config(state_dir=tmp_path / "other"))
    [packed] = await other.import_image(gz)
    assert (packed.id, packed.digest) == (plain.id, plain.digest)


@pytest.mark.anyio
async def test_a_gzip_compressed_archive_imports_like_the_plain_one(runtime, busybox_archive, tmp_path):
    packed = tmp_path / "busybox.tar.gz"
    packed.write_bytes(gzip.compress(busybox_archive.read_bytes(), compresslevel=1))
    [plain] = await runtime.import_image(busybox_archive)
    other = NativeRuntime(Config(state_dir=tmp_path / "other"))
    [image] = await other.import_image(packed)
    assert (image.id, image.digest, image.references) == (plain.id, plain.digest, plain.references)
    assert [n for n in os.listdir(other.store.root) if n not in ("blobs", "layers", "locks", "index.json")] == []


def busybox_archive_config(archive) -> bytes:
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        return tar.extractfile(manifest[0]["Config"]).read()


@pytest.mark.anyio
async def test_layer_not_matching_its_diff_id_is_refused(runtime, busybox_archive, tmp_path):
    bad = tmp_path / "bad.tar"
    with tarfile.open(busybox_archive) as tin, tarfile.open(bad, "w") as tout:
        for member in tin:
            data = tin.extractfile(member).read() if member.isreg() else None
            if member.name.endswith("layer.tar"):
                data = mkimage.Layer().file("evil", "swapped\n").bytes()
                member.size = len(data)
            tout.addfile(member, None if data is None else io.BytesIO(data))
    with pytest.raises(RuntimeFailure, match="expected sha256:"):
        await runtime.import_image(bad)
    assert await runtime.images() == []
    # the layer was being unpacked while its blob was checked: neither is left, nor any temp file
    assert os.listdir(runtime.store.layers) == []
    layer_blob = runtime.store.blob_path(json.loads(busybox_archive_config(busybox_archive))["rootfs"]["diff_ids"][0])
    assert not layer_blob.exists() and not [n for n in os.listdir(runtime.store.blobs) if ".tmp-" in n]


@pytest.mark.anyio
async def test_export_then_import_keeps_every_digest(runtime, layered_archive, tmp_path):
    [image] = await runtime.import_image(layered_archive)
    out = tmp_path / "layout.tar"
    await runtime.export_image(LAYERED, out)
    with tarfile.open(out) as tar:
        assert json.load(tar.extractfile("oci-layout")) == {"imageLayoutVersion": "1.0.0"}
        index = json.load(tar.extractfile("index.json"))
        [desc] = index["manifests"]
        assert desc["digest"] == image.digest
        assert desc["annotations"]["org.opencontainers.image.ref.name"] == "docker.io/" + LAYERED
        for member in tar.getmembers():
            if member.name.startswith("blobs/sha256/") and member.isreg():
                data = tar.extractfile(member).read()
                assert hashlib.sha256(data).hexdigest() == member.name.rsplit("/", 1)[1]

    again = NativeRuntime(Config(state_dir=tmp_path / "again"))
    [copy] = await again.import_image(out)
    assert (copy.id, copy.digest, copy.references) == (image.id, image.digest, image.references)
    assert (await again.image_inspect(LAYERED))["RootFS"] == (await runtime.image_inspect(LAYERED))["RootFS"]
    out2 = tmp_path / "layout2.tar"
    await again.export_image(LAYERED, out2)
    assert out2.read_bytes() == out.read_bytes()


@pytest.mark.anyio
async def test_uncompressed_layers_keep_a_tar_split_not_a_second_copy(runtime, layered_archive, tmp_path):
    await runtime.import_image(layered_archive)
    store = runtime.store
    for diff_id in archive_config(layered_archive)["rootfs"]["diff_ids"]:
        assert store.has_blob(diff_id) and not store.blob_path(diff_id).exists()
        assert (store.layer_dir(diff_id) / "tar-split").is_file()
        data = b"".join(store.blob_chunks(diff_id, "test"))
        assert len(data) == store.blob_size(diff_id) and f"sha256:{hashlib.sha256(data).hexdigest()}" == diff_id

    # a layer file changed behind the store's back: the export is refused and writes nothing
    busybox = store.layer_paths(LAYERED)[0] / "bin" / "busybox"
    busybox.chmod(0o755)
    with busybox.open("r+b") as f:
        f.seek(100)
        f.write(b"\0" * 8)
    out = tmp_path / "layout.tar"
    with pytest.raises(RuntimeFailure, match="the store is damaged"):
        await runtime.export_image(LAYERED, out)
    assert not out.exists() and not list(tmp_path.glob("layout.tar.tmp-*"))


@pytest.mark.anyio
async def test_a_layer_whose_files_cannot_give_its_tar_back_keeps_its_blob(runtime, tmp_path):
    # the same path twice: the first file's data is gone after extraction
    twice = mkimage.Layer().file("etc/motd", "first\n").file("etc/motd", "second\n")
    # a file, then its directory replaced by a symlink
    replaced = mkimage.Layer().dir("app").file("app/run", "run\n").symlink("app", "elsewhere")
    # a file deeper than one open() reaches
    deep = "/".join(f"{i:02d}" + "d" * 238 for i in range(14))
    far = mkimage.Layer().file(f"{deep}/far", "far\n")
    archive = tmp_path / "odd.tar"
    mkimage.write_docker_archive(
        archive, [mkimage.busybox_layer().bytes(), twice.bytes(), replaced.bytes(), far.bytes()], ["orchestr-test/odd:1"])
    [image] = await runtime.import_image(archive)
    diff_ids = archive_config(archive)["rootfs"]["diff_ids"]
    assert [runtime.store.blob_path(d).is_file() for d in diff_ids] == [False, True, True, True]
    assert (runtime.store.layer_paths("orchestr-test/odd:1")[1] / "etc/motd").read_text() == "second\n"
    out = tmp_path / "odd-layout.tar"
    await runtime.export_image("orchestr-test/odd:1", out)
    [again] = await NativeRuntime(Config(state_dir=tmp_path / "again")).import_image(out)
    assert (again.id, again.digest) == (image.id, image.digest)


@pytest.mark.anyio
async def test_a_layer_with_a_sparse_file_imports_through_its_stored_blob(runtime, tmp_path):
    """GNU tar's sparse members cannot be read in the one forward pass: such a layer keeps its tar."""
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    with open(root / "data" / "holes", "wb") as f:
        f.truncate(8 << 20)
        f.seek(4 << 20)
        f.write(b"middle")
    layer = tmp_path / "layer.tar"
    subprocess.run(["tar", "--sparse", "--format=gnu", "-C", str(root), "-cf", str(layer), "data"], check=True)
    with tarfile.open(layer) as tar:
        assert any(m.issparse() for m in tar)
    archive = tmp_path / "sparse.tar"
    mkimage.write_docker_archive(archive, [mkimage.busybox_layer().bytes(), layer.read_bytes()],
                                 ["orchestr-test/sparse:1"])
    [image] = await runtime.import_image(archive)
    diff_id = archive_config(archive)["rootfs"]["diff_ids"][1]
    assert runtime.store.blob_path(diff_id).is_file()
    holes = runtime.store.layer_paths("orchestr-test/sparse:1")[1] / "data" / "holes"
    data = holes.read_bytes()
    assert len(data) == 8 << 20 and data[4 << 20:(4 << 20) + 6] == b"middle" and not any(data[:4 << 20])
    out = tmp_path / "sparse-layout.tar"
    await runtime.export_image("orchestr-test/sparse:1", out)
    [again] = await NativeRuntime(Config(state_dir=tmp_path / "again")).import_image(out)
    assert (again.id, again.digest) == (image.id, image.digest)


@pytest.mark.anyio
async def test_import_an_oci_layout_written_by_skopeo(runtime, busybox_archive, tmp_path):
    layout = tmp_path / "oci.tar"
    subprocess.run(["skopeo", "copy", "--quiet", f"docker-archive:{busybox_archive}",
                    f"oci-archive:{layout}:orchestr-test/busybox:skopeo"], check=True, capture_output=True)
    [image] = await runtime.import_image(layout)
    assert image.references == ("orchestr-test/busybox:skopeo",)
    inspect = await runtime.image_inspect(image.id)  # skopeo rewrites the config as an OCI one: a new id
    assert inspect["RootFS"]["Layers"] == archive_config(busybox_archive)["rootfs"]["diff_ids"]
    assert (runtime.store.layer_paths(image.id)[0] / "bin/busybox").is_file()


@pytest.mark.anyio
async def test_overlay_of_the_layers_hides_whiteouts_and_opaque_contents(runtime, layered_archive, tmp_path):
    await runtime.import_image(layered_archive)
    layers = runtime.store.layer_paths(LAYERED)
    assert len(layers) == 3
    merged = tmp_path / "merged"
    merged.mkdir()
    lower = ":".join(str(p) for p in reversed(layers))  # overlayfs lists the top layer first
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower}", str(merged)], check=True)
    try:
        assert (merged / "data/keep").read_text() == "keep\n"
        assert not (merged / "data/gone").exists()
        assert sorted(os.listdir(merged / "data")) == ["keep"]
        assert sorted(os.listdir(merged / "opq")) == ["new"]
        assert (merged / "bin/busybox").is_file()
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    assert str(merged) not in Path("/proc/self/mounts").read_text()


@pytest.mark.anyio
async def test_concurrent_imports_unpack_a_shared_layer_once(runtime, busybox_archive, layered_archive, monkeypatch):
    unpacked: list[str] = []  # the layer each unpack wrote, from its directory's name: layers/<hex>.tmp-*/diff

    def counting(real):
        def unpack_counted(*args):
            unpacked.append(args[-2].parent.name.partition(".tmp-")[0])
            return real(*args)
        return unpack_counted

    monkeypatch.setattr(unpack, "unpack", counting(unpack.unpack))
    monkeypatch.setattr(unpack, "unpack_region", counting(unpack.unpack_region))
    async with anyio.create_task_group() as tg:
        tg.start_soon(runtime.import_image, busybox_archive)
        tg.start_soon(runtime.import_image, layered_archive)
    shared = archive_config(busybox_archive)["rootfs"]["diff_ids"][0]
    assert shared in archive_config(layered_archive)["rootfs"]["diff_ids"]
    assert sorted(unpacked) == sorted(set(unpacked)) and len(unpacked) == 3
    assert len(await runtime.images()) == 2


@pytest.mark.anyio
async def test_a_repeated_empty_layer_is_given_to_overlayfs_once(runtime, tmp_path):
    path = tmp_path / "repeated.tar"
    empty = mkimage.Layer().bytes()
    mkimage.write_docker_archive(path, [empty, mkimage.busybox_layer().bytes(), empty], ["orchestr-test/rep:1"])
    await runtime.import_image(path)
    layers = runtime.store.layer_paths("orchestr-test/rep:1")
    assert len(layers) == 2 and (layers[1] / "bin/busybox").is_file()


@pytest.mark.anyio
async def test_remove_untags_first_and_keeps_layers_other_images_share(runtime, layered_archive, tmp_path):
    two_tags = tmp_path / "two.tar"
    mkimage.busybox_image(two_tags, ["orchestr-test/bb:one", "orchestr-test/bb:two"])
    [bb] = await runtime.import_image(two_tags)
    await runtime.import_image(layered_archive)
    store = runtime.store
    config_blob = store.blob_path(bb.id)
    await runtime.image_remove("orchestr-test/bb:one")
    assert (await runtime.image_inspect(bb.id))["RepoTags"] == ["orchestr-test/bb:two"]
    await runtime.image_remove("orchestr-test/bb:two")
    with pytest.raises(NotFound):
        store.resolve(bb.id)
    assert not config_blob.exists()
    assert all(p.is_dir() for p in store.layer_paths(LAYERED))  # the busybox layer is shared, so it stays
    with pytest.raises(NotFound):
        await runtime.image_remove("orchestr-test/bb:two")


@pytest.mark.anyio
async def test_prune_collects_untagged_images_and_stray_content_only(runtime, busybox_archive, layered_archive,
                                                                     tmp_path):
    store = runtime.store
    [old] = await runtime.import_image(busybox_archive)
    retagged = tmp_path / "retag.tar"
    mkimage.write_docker_archive(retagged, [mkimage.busybox_layer().bytes(), mkimage.Layer().file("v2", "2").bytes()],
                                 [TEST_IMAGE])
    [new] = await runtime.import_image(retagged)  # takes the tag; the old image is left untagged
    await runtime.import_image(layered_archive)
    untagged = [i for i in await runtime.images() if i.id == old.id]
    assert untagged and untagged[0].references == ()
    stray = store.put_bytes(b"left by an interrupted pull", "test")

    removed = await runtime.image_prune()
    assert f"image {old.id}" in removed and f"blob {old.id}" in removed and f"blob {stray}" in removed
    assert not any(r.startswith("layer") for r in removed)  # the old image's only layer is shared
    assert {i.id for i in await runtime.images()} == {new.id, store.resolve(LAYERED)}
    for ref in (TEST_IMAGE, LAYERED):
        assert all(p.is_dir() for p in store.layer_paths(ref))
    assert await runtime.image_prune() == []

    await runtime.image_remove(LAYERED)
    layered_only = set(archive_config(layered_archive)["rootfs"]["diff_ids"][1:])
    assert not any(store.has_layer(d) or store.has_blob(d) for d in layered_only)
    assert all(p.is_dir() for p in store.layer_paths(TEST_IMAGE))


@pytest.mark.anyio
async def test_remove_is_refused_while_a_container_uses_the_image(runtime, busybox_archive, namespace):
    if _containers_module() is None:
        pytest.skip("orchestr_native.containers is not there yet: only removal without containers is tested")
    [image] = await runtime.import_image(busybox_archive)
    spec = ContainerSpec(name="user-0", namespace=namespace, image=TEST_IMAGE, command=("sleep", "60"), network="none",
                         labels={"orchestr.namespace": namespace, "orchestr.service": "user"})
    container = await runtime.create(spec)
    try:
        with pytest.raises(Conflict, match="used by a container"):
            await runtime.image_remove(TEST_IMAGE)
        await runtime.image_remove(TEST_IMAGE, force=True)
        assert runtime.store.layer_paths(image.id)  # still there for the container
        assert await runtime.image_prune() == []
    finally:
        await runtime.delete(container.id, force=True)
        await runtime.close()
    assert f"image {image.id}" in await runtime.image_prune()


BOMB = "orchestr-test/bomb:1"


def _bomb(path: Path, form: str) -> Path:
    """An image archive whose second layer is a bomb of one of these forms; returns its path."""
    if form == "many entries":
        top = mkimage.Layer()
        for i in range(1500):
            top.file(f"f{i}", b"")
    else:
        top = mkimage.Layer().file("zeros", bytes(64 << 20))
    mkimage.write_docker_archive(path, [mkimage.busybox_layer().bytes(), top.bytes()], [BOMB])
    if form == "gzip layers":
        gzip_layers(path, path.with_suffix(".gz.tar"))
        return path.with_suffix(".gz.tar")
    if form == "gzip archive":
        path.with_suffix(".tar.gz").write_bytes(gzip.compress(path.read_bytes(), mtime=0))
        return path.with_suffix(".tar.gz")
    return path


@pytest.mark.anyio
@pytest.mark.parametrize("form", ["large", "gzip layers", "gzip archive", "many entries"])
async def test_an_image_bomb_is_refused_whole_and_the_store_stays_usable(runtime, busybox_archive, tmp_path,
                                                                        monkeypatch, form):
    path = _bomb(tmp_path / "bomb.tar", form)
    monkeypatch.setenv(unpack.SIZE_ENV, "16Mi")
    monkeypatch.setenv(unpack.ENTRIES_ENV, "1000")
    limit = "has more than 1000 entries" if form == "many entries" else "unpacks to more than 16Mi"
    with pytest.raises(RuntimeFailure, match=f"^{path}.*: (a layer|the archive) {limit}; refused") as refused:
        await runtime.import_image(path)
    assert "\n" not in str(refused.value)
    assert await runtime.images() == []
    store = runtime.store
    bomb_layer = archive_config(tmp_path / "bomb.tar")["rootfs"]["diff_ids"][1]
    assert not store.has_layer(bomb_layer) and not store.has_blob(bomb_layer)
    assert [n for n in os.listdir(store.layers) + os.listdir(store.blobs) if ".tmp-" in n] == []
    [image] = await runtime.import_image(busybox_archive)  # the store takes other images as before
    assert image.references == (TEST_IMAGE,)
    monkeypatch.setenv(unpack.SIZE_ENV, "1Gi")  # the same image, trusted: the limits raised, it imports
    monkeypatch.setenv(unpack.ENTRIES_ENV, "2000")
    [bomb] = await runtime.import_image(path)
    top = runtime.store.layer_paths(bomb.id)[-1]
    assert len(os.listdir(top)) == 1500 if form == "many entries" else (top / "zeros").stat().st_size == 64 << 20
