"""Pulling into the native image store from a real registry on loopback: auth, verification, platforms, sharing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import anyio
import pytest
from registry import docker_config, running_registry

from orchestr.config import Config
from orchestr.errors import NotFound, RuntimeFailure
from orchestr.testing import images as mkimage
from orchestr.registry import client as registry_client
from orchestr_native.images import unpack
from orchestr_native.runtime import NativeRuntime

pytestmark = [pytest.mark.anyio, pytest.mark.registry]


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pull-images")
    base = mkimage.busybox_layer().bytes()
    made = {}
    for name, layers, arch in [
        ("bb", [base], "amd64"),
        ("app", [base, mkimage.Layer().file("app/run", "app\n").bytes()], "amd64"),
        ("amd64", [base, mkimage.Layer().file("arch", "amd64\n").bytes()], "amd64"),
        ("arm64", [base, mkimage.Layer().file("arch", "arm64\n").bytes()], "arm64"),
    ]:
        made[name] = d / f"{name}.tar"
        mkimage.write_docker_archive(made[name], layers, [f"{name}:latest"], architecture=arch)
    return made


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory, archives):
    with running_registry(tmp_path_factory.mktemp("registry-open")) as reg:
        reg.push(archives["bb"], "bb:latest")
        reg.push(archives["app"], "app:latest")
        reg.push(archives["amd64"], "multi:amd64")
        reg.push(archives["arm64"], "multi:arm64")
        yield reg


@pytest.fixture(autouse=True)
def no_credentials(tmp_path, monkeypatch) -> Path:
    """An empty Docker config, so credentials on this machine play no part."""
    path = tmp_path / "docker-config"
    path.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(path))
    return path


@pytest.fixture
def runtime(tmp_path) -> NativeRuntime:
    return NativeRuntime(Config(state_dir=tmp_path / "state"))


def digest(raw: bytes) -> str:
    return f"sha256:{hashlib.sha256(raw).hexdigest()}"


async def test_anonymous_pull_unpacks_layers_and_reports_progress(runtime, open_registry):
    reports = []
    image = await runtime.pull(f"{open_registry.host}/bb:latest", reports.append)
    raw, _ = open_registry.manifest("bb", "latest")
    assert image.digest == digest(raw)
    assert image.references == (f"{open_registry.host}/bb:latest", f"{open_registry.host}/bb@{digest(raw)}")
    layer_blob = json.loads(raw)["layers"][0]["digest"]
    assert [r.status for r in reports if r.layer == layer_blob][-2:] == ["extracting", "done"]
    total = [r for r in reports if r.layer is None]
    assert total[-1].status == "done" and total[-1].current == total[-1].total == json.loads(raw)["layers"][0]["size"]
    [layer] = runtime.store.layer_paths(f"{open_registry.host}/bb")
    assert (layer / "bin/busybox").is_file()

    again = []
    await runtime.pull(f"{open_registry.host}/bb:latest", again.append)
    assert [r.status for r in again if r.layer == layer_blob] == ["exists"]


async def test_zstd_layers_pull_and_import_to_the_same_image_as_gzip_ones(runtime, open_registry, archives, tmp_path):
    layout = tmp_path / "app-zstd.tar"
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-compress", "--dest-compress-format", "zstd",
                    f"docker-archive:{archives['app']}", f"oci-archive:{layout}"], check=True, capture_output=True)
    open_registry.push_layout(layout, "appz:latest")
    raw, _ = open_registry.manifest("appz", "latest")
    assert {layer["mediaType"] for layer in json.loads(raw)["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    zstd = await runtime.pull(f"{open_registry.host}/appz:latest")
    gzipped = NativeRuntime(Config(state_dir=tmp_path / "gzip"))
    gzip = await gzipped.pull(f"{open_registry.host}/app:latest")
    # skopeo rewrote the config for OCI, so the ids differ; the layers, checked against their diff-ids, do not
    diff_ids = runtime.store.lookup(zstd.id)[0].diff_ids
    assert diff_ids == gzipped.store.lookup(gzip.id)[0].diff_ids
    assert (runtime.store.layer_paths(zstd.id)[-1] / "app" / "run").read_text() == "app\n"
    importer = NativeRuntime(Config(state_dir=tmp_path / "import"))
    [imported] = await importer.import_image(layout)
    assert imported.id == zstd.id and importer.store.lookup(imported.id)[0].diff_ids == diff_ids


async def test_pull_of_an_unknown_tag_is_not_found(runtime, open_registry):
    with pytest.raises(NotFound, match="not found in registry"):
        await runtime.pull(f"{open_registry.host}/bb:nope")


async def test_index_pull_picks_this_machines_platform(runtime, open_registry):
    index_digest = open_registry.push_index("multi", "latest", [
        ("arm64", {"os": "linux", "architecture": "arm64", "variant": "v8"}),
        ("amd64", {"os": "linux", "architecture": "amd64"}),
    ])
    ref = f"{open_registry.host}/multi:latest"
    image = await runtime.pull(ref)
    inspect = await runtime.image_inspect(ref)
    assert inspect["Architecture"] == "amd64"
    assert f"{open_registry.host}/multi@{index_digest}" in image.references
    assert (runtime.store.layer_paths(ref)[-1] / "arch").read_text() == "amd64\n"
    assert image.digest == digest(open_registry.manifest("multi", "amd64")[0])


async def test_corrupted_blob_in_the_registry_is_refused(runtime, open_registry, tmp_path):
    open_registry.push(mkimage_archive(tmp_path, "corrupt-blob"), "corrupt-blob:latest")
    raw, _ = open_registry.manifest("corrupt-blob", "latest")
    blob = json.loads(raw)["layers"][-1]["digest"]
    data = open_registry.blob_data(blob)
    data.write_bytes(bytes(b ^ 0xFF for b in data.read_bytes()))
    with pytest.raises(RuntimeFailure, match=f"expected {blob}; refused"):
        await runtime.pull(f"{open_registry.host}/corrupt-blob:latest")
    assert not runtime.store.has_blob(blob)
    assert not [n for n in os.listdir(runtime.store.blobs) if ".tmp-" in n]
    assert await runtime.images() == []


async def test_corrupted_manifest_in_the_registry_is_refused(runtime, open_registry, tmp_path):
    open_registry.push(mkimage_archive(tmp_path, "corrupt-manifest"), "corrupt-manifest:latest")
    raw, _ = open_registry.manifest("corrupt-manifest", "latest")
    open_registry.blob_data(digest(raw)).write_bytes(raw.replace(b'"schemaVersion":2', b'"schemaVersion": 2'))
    with pytest.raises(RuntimeFailure, match=f"expected {digest(raw)}; refused"):
        await runtime.pull(f"{open_registry.host}/corrupt-manifest:latest")
    assert await runtime.images() == []


def mkimage_archive(directory: Path, name: str) -> Path:
    """An image whose top layer no other test pushes, so corrupting its blobs harms no one else."""
    path = directory / f"{name}.tar"
    unique = mkimage.Layer().file("unique", f"{name} {time.time_ns()}\n").bytes()
    mkimage.write_docker_archive(path, [mkimage.busybox_layer().bytes(), unique], [f"{name}:latest"])
    return path


async def test_basic_auth_with_htpasswd(runtime, archives, tmp_path, monkeypatch):
    with running_registry(tmp_path / "registry", "htpasswd") as reg:
        reg.push(archives["bb"], "bb:latest")
        status, headers, _ = reg.request("GET", "/v2/bb/manifests/latest")
        assert status == 401 and headers["Www-Authenticate"].startswith("Basic")
        ref = f"{reg.host}/bb:latest"
        with pytest.raises(RuntimeFailure, match="needs credentials; none for it in"):
            await runtime.pull(ref)
        monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "wrong", reg.host, "alice", "wrong")))
        with pytest.raises(RuntimeFailure, match="refused the credentials of 'alice'"):
            await runtime.pull(ref)
        monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "right", reg.host, *reg.creds)))
        image = await runtime.pull(ref)
        assert image.references[0] == ref
        assert runtime.store.layer_paths(ref)


async def test_bearer_token_flow(runtime, archives, tmp_path, monkeypatch):
    with running_registry(tmp_path / "registry", "token") as reg:
        reg.push(archives["bb"], "bb:latest")
        status, headers, _ = reg.request("GET", "/v2/bb/manifests/latest")
        assert status == 401 and headers["Www-Authenticate"].startswith(f'Bearer realm="{reg.token_server.realm}"')
        ref = f"{reg.host}/bb:latest"
        with pytest.raises(RuntimeFailure, match="refused anonymous access"):
            await runtime.pull(ref)
        monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "wrong", reg.host, "alice", "wrong")))
        with pytest.raises(RuntimeFailure, match="refused the credentials of 'alice'"):
            await runtime.pull(ref)
        monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "right", reg.host, *reg.creds)))
        reg.token_server.requests.clear()
        image = await runtime.pull(ref)
        assert image.references[0] == ref and runtime.store.layer_paths(ref)
        scopes = [parse_qs(urlparse(r).query).get("scope") for r in reg.token_server.requests]
        assert ["repository:bb:pull"] in scopes


async def test_credentials_never_go_to_a_plain_http_token_server_on_another_host(runtime, archives, tmp_path,
                                                                                 monkeypatch):
    # the registry on 127.0.0.1 names a token server on 127.0.0.2 over plain HTTP: anyone could stand there
    with running_registry(tmp_path / "registry", "token", token_host="127.0.0.2") as reg:
        reg.push(archives["bb"], "bb:latest")
        assert reg.token_server.realm.startswith("http://127.0.0.2:")
        monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "config", reg.host, *reg.creds)))
        reg.token_server.requests.clear()
        reg.token_server.authorizations.clear()
        with pytest.raises(RuntimeFailure, match="go only to its own host or over HTTPS"):
            await runtime.pull(f"{reg.host}/bb:latest")
        assert reg.token_server.requests, "the token server was never asked"
        assert reg.token_server.authorizations == [None] * len(reg.token_server.requests)
        assert runtime.store.all() == []


HELPER = """#!/bin/sh
# a credential helper speaking the docker-credential-* protocol: `get` reads the server on stdin
read server
if [ "$1" = get ] && [ "$server" = "{host}" ]; then
  printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{password}"}}' "$server"
else
  echo "credentials not found in native keychain"; exit 1
fi
"""


async def test_credentials_from_credential_helpers(runtime, archives, tmp_path, monkeypatch):
    with running_registry(tmp_path / "registry", "htpasswd") as reg:
        reg.push(archives["bb"], "bb:latest")
        ref = f"{reg.host}/bb:latest"
        helpers = tmp_path / "bin"
        helpers.mkdir()
        for name, host in (("orctest", reg.host), ("orcother", "elsewhere.test:5000")):
            path = helpers / f"docker-credential-{name}"
            path.write_text(HELPER.format(host=host, user=reg.creds[0], password=reg.creds[1]))
            path.chmod(0o755)
        monkeypatch.setenv("PATH", f"{helpers}:{os.environ['PATH']}")
        config = tmp_path / "config"
        config.mkdir()
        monkeypatch.setenv("DOCKER_CONFIG", str(config))

        def configure(**doc) -> None:
            (config / "config.json").write_text(json.dumps(doc))

        configure(credsStore="orcother")  # a store with nothing for this registry: the pull goes anonymous
        with pytest.raises(RuntimeFailure, match="needs credentials; none for it in"):
            await runtime.pull(ref)
        configure(credsStore="absent")
        with pytest.raises(RuntimeFailure, match="docker-credential-absent is not on PATH"):
            await runtime.pull(ref)
        # the registry's own helper comes before the store
        configure(credsStore="orcother", credHelpers={reg.host: "orctest"})
        image = await runtime.pull(ref)
        assert image.references[0] == ref and runtime.store.layer_paths(ref)


def test_plain_http_only_for_loopback_and_listed_registries(monkeypatch):
    monkeypatch.delenv("ORCHESTR_INSECURE_REGISTRIES", raising=False)
    assert registry_client.insecure("localhost:5000") and registry_client.insecure("127.0.0.1:5000")
    assert registry_client.insecure("[::1]:5000")
    assert not registry_client.insecure("registry.example:5000")
    monkeypatch.setenv("ORCHESTR_INSECURE_REGISTRIES", "other.example:80, registry.example:5000")
    assert registry_client.insecure("registry.example:5000")
    assert not registry_client.insecure("registry.example:5001")


async def test_concurrent_pulls_fetch_and_unpack_a_shared_layer_once(runtime, open_registry, monkeypatch):
    unpacked: list[str] = []
    fetched: list[str] = []
    real_unpack, real_blob = unpack.unpack, registry_client.RegistryClient.blob

    def counting_unpack(blob, blob_digest, diff_id, dest, what):
        unpacked.append(diff_id)
        return real_unpack(blob, blob_digest, diff_id, dest, what)

    async def counting_blob(self, blob_digest, *args, **kwargs):
        fetched.append(blob_digest)
        return await real_blob(self, blob_digest, *args, **kwargs)

    monkeypatch.setattr(unpack, "unpack", counting_unpack)
    monkeypatch.setattr(registry_client.RegistryClient, "blob", counting_blob)
    async with anyio.create_task_group() as tg:
        tg.start_soon(runtime.pull, f"{open_registry.host}/bb:latest")
        tg.start_soon(runtime.pull, f"{open_registry.host}/app:latest")
    assert len(unpacked) == len(set(unpacked)) == 2
    assert len(fetched) == len(set(fetched)) == 4  # two configs, two layers
    assert len(await runtime.images()) == 2


PULL_SCRIPT = """
import asyncio, json, sys, time
from pathlib import Path
from orchestr.config import Config
from orchestr_native.images import unpack
from orchestr_native.runtime import NativeRuntime

unpacked, real = [], unpack.unpack
def counting(blob, blob_digest, diff_id, dest, what):
    unpacked.append(diff_id)
    return real(blob, blob_digest, diff_id, dest, what)
unpack.unpack = counting
runtime = NativeRuntime(Config(state_dir=Path(sys.argv[1])))
go = Path(sys.argv[3])
while not go.exists():
    time.sleep(0.01)
asyncio.run(runtime.pull(sys.argv[2]))
print(json.dumps(unpacked))
"""


def test_two_processes_pulling_images_that_share_a_layer_unpack_it_once(open_registry, tmp_path):
    state, go = tmp_path / "state", tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PULL_SCRIPT, str(state), f"{open_registry.host}/{name}:latest", str(go)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name in ("bb", "app")
    ]
    go.touch()
    unpacked = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        unpacked += json.loads(out)
    assert len(unpacked) == len(set(unpacked)) == 2
    store = NativeRuntime(Config(state_dir=state)).store
    for name in ("bb", "app"):
        assert all(p.is_dir() for p in store.layer_paths(f"{open_registry.host}/{name}:latest"))
    assert not [n for n in os.listdir(store.layers) if ".tmp-" in n]


def test_run_of_an_image_not_yet_pulled_pulls_it_first(open_registry, tmp_path):
    """`orchestr run` does a present image's container without an event loop; a missing image takes the async
    path, which pulls it (with progress on stderr) before the container runs."""
    ref = f"{open_registry.host}/app:latest"
    env = dict(os.environ, ORCHESTR_STATE_DIR=str(tmp_path / "state"), ORCHESTR_RUNTIME="native")
    argv = [str(Path(sys.executable).parent / "orchestr"), "run", "--rm", "--network", "none", ref, "cat", "/app/run"]
    first = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "app\n" and f"{ref}: " in first.stderr and ": Done " in first.stderr
    again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert (again.returncode, again.stdout, again.stderr) == (0, "app\n", "")
    assert not os.listdir(tmp_path / "state" / "native" / "containers")


async def test_a_bomb_layer_is_refused_whole_and_a_later_pull_works(runtime, open_registry, tmp_path, monkeypatch):
    bomb = mkimage.Layer().file("zeros", bytes(64 << 20)).bytes()
    archive = tmp_path / "bomb.tar"
    mkimage.write_docker_archive(archive, [mkimage.busybox_layer().bytes(), bomb], ["bomb:latest"])
    open_registry.push(archive, "bomb:latest")  # skopeo gzips the layers: 64 MiB of zeros become a few KiB
    raw, _ = open_registry.manifest("bomb", "latest")
    layer = json.loads(raw)["layers"][1]
    assert layer["size"] < 1 << 20
    ref = f"{open_registry.host}/bomb:latest"
    monkeypatch.setenv(unpack.SIZE_ENV, "16Mi")
    with pytest.raises(RuntimeFailure) as refused:
        await runtime.pull(ref)
    assert str(refused.value) == (f"{ref}: a layer unpacks to more than 16Mi; refused "
                                  "(ORCHESTR_UNPACK_MAX_SIZE sets the limit)")
    store = runtime.store
    diff_id = f"sha256:{hashlib.sha256(bomb).hexdigest()}"
    assert store.all() == [] and not store.has_blob(layer["digest"]) and not store.has_layer(diff_id)
    assert [n for n in os.listdir(store.layers) + os.listdir(store.blobs) if ".tmp-" in n] == []
    monkeypatch.setenv(unpack.SIZE_ENV, "1Gi")
    image = await runtime.pull(ref)
    assert (store.layer_paths(image.id)[-1] / "zeros").stat().st_size == 64 << 20


def _store_bytes(root: Path) -> int:
    """Bytes of the files under root, each inode once (the image store hard-links nothing, but be exact)."""
    seen, total = set(), 0
    for path in root.rglob("*"):
        info = path.lstat()
        if path.is_file() and not path.is_symlink() and (info.st_dev, info.st_ino) not in seen:
            seen.add((info.st_dev, info.st_ino))
            total += info.st_size
    return total


async def test_importing_layers_already_pulled_keeps_a_tar_split_not_a_second_copy(runtime, open_registry,
                                                                                   archives, tmp_path):
    pulled = await runtime.pull(f"{open_registry.host}/app:latest")
    images = runtime.store.root
    before = _store_bytes(images)
    [imported] = await runtime.import_image(archives["app"])
    assert imported.id == pulled.id  # the same config: the same image, under the archive's name too
    grown = _store_bytes(images) - before
    assert grown < before * 0.05, (grown, before)
    stored = runtime.store.lookup("app:latest")[0]
    for diff_id in stored.diff_ids:  # each layer gives its tar back from its files, checked against its digest
        assert (runtime.store.layer_dir(diff_id) / "tar-split").is_file()
    # and the import's tars, given back from the pulled layers' files, export and import elsewhere unchanged
    out = tmp_path / "app-oci.tar"
    await runtime.export_image("app:latest", out)
    elsewhere = NativeRuntime(Config(state_dir=tmp_path / "elsewhere"))
    [again] = await elsewhere.import_image(out)
    assert again.id == pulled.id and again.digest == imported.digest
