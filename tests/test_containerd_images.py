"""The containerd runtime's images in containerd's own store: pulls from a real registry on loopback through the
shared registry client (anonymous, basic, bearer tokens), OCI-layout imports, layers unpacked once, ls, inspect,
history, rm and prune, in the session's own containerd namespace."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from registry import docker_config, running_registry

from conftest import ctr
from orchestr.config import Config
from orchestr.errors import Conflict, NotFound, RuntimeFailure
from orchestr.model import ContainerSpec, RestartPolicy
from orchestr.testing import images as mkimage

pytestmark = [pytest.mark.anyio, pytest.mark.registry]


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cd-pull-images")
    base = mkimage.busybox_layer().bytes()
    made = {}
    for name, layers in [("bb", [base]), ("app", [base, mkimage.Layer().file("app/run", "app\n").bytes()])]:
        made[name] = d / f"{name}.tar"
        mkimage.write_docker_archive(made[name], layers, [f"cd-{name}:latest"])
    return made


@pytest.fixture(autouse=True)
def no_credentials(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "docker-config"
    path.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(path))
    return path


@pytest.fixture
async def runtime(containerd_namespace, tmp_path):
    from orchestr_containerd.runtime import ContainerdRuntime

    rt = ContainerdRuntime(Config(state_dir=tmp_path / "state"))
    yield rt
    await rt.close()


def snapshot_keys(namespace: str) -> set[str]:
    return {line.split()[0] for line in ctr(namespace, "snapshots", "ls").splitlines()[1:] if line.strip()}


async def test_pull_unpacks_each_layer_once_and_the_image_verbs(runtime, archives, tmp_path, containerd_namespace):
    with running_registry(tmp_path / "registry") as reg:
        reg.push(archives["bb"], "bb:latest")
        reg.push(archives["app"], "app:latest")
        bb = await runtime.pull(f"{reg.host}/bb:latest")
        before = snapshot_keys(containerd_namespace)
        app = await runtime.pull(f"{reg.host}/app:latest")
    after = snapshot_keys(containerd_namespace)
    assert len(after - before) == 1  # the shared busybox layer was not unpacked again: only app's own
    assert bb.references[0] == f"{reg.host}/bb:latest" and app.id != bb.id
    listed = {i.id: i for i in await runtime.images()}
    assert f"{reg.host}/app:latest" in listed[app.id].references
    details = await runtime.image_inspect(f"{reg.host}/app:latest")
    assert details["Id"] == app.id and f"{reg.host}/app:latest" in details["RepoTags"]
    history = await runtime.image_history(f"{reg.host}/app:latest")
    assert [h.created_by for h in history] == ["orchestr mkimage layer 1", "orchestr mkimage layer 0"]

    spec = ContainerSpec(name="user", namespace="cdimg", image=f"{reg.host}/app:latest",
                         labels={"orchestr.namespace": "cdimg"}, command=("true",), network="none",
                         restart_policy=RestartPolicy.NEVER)
    c = await runtime.create(spec)
    try:
        with pytest.raises(Conflict):
            await runtime.image_remove(f"{reg.host}/app:latest")
    finally:
        await runtime.delete(c.id)
    await runtime.image_remove(f"{reg.host}/app:latest")
    with pytest.raises(NotFound):
        await runtime.image_inspect(f"{reg.host}/app:latest")
    pinned = f"{reg.host}/bb@{bb.digest}"
    assert pinned in [r for i in await runtime.images() for r in i.references]
    await runtime.image_remove(f"{reg.host}/bb:latest")  # its last tag: the name@digest goes too, as Docker's
    assert not [r for i in await runtime.images() for r in i.references if r.startswith(f"{reg.host}/")]
    with running_registry(tmp_path / "registry2") as reg2:
        reg2.push(archives["bb"], "bb:latest")
        by_digest = await runtime.pull(f"{reg2.host}/bb@{bb.digest}")
    assert by_digest.id == bb.id
    assert await runtime.image_prune() == [f"{reg2.host}/bb@{bb.digest}"]  # untagged and unused: pruned
    assert not [r for i in await runtime.images() for r in i.references if r.startswith(f"{reg2.host}/")]
    assert not [k for k in snapshot_keys(containerd_namespace) if k in after - before]


@pytest.mark.parametrize("auth", ["htpasswd", "token"])
async def test_pull_with_credentials_from_dockers_config(runtime, archives, tmp_path, monkeypatch, auth):
    with running_registry(tmp_path / "registry", auth) as reg:
        reg.push(archives["bb"], "bb:latest")
        ref = f"{reg.host}/bb:latest"
        with pytest.raises(RuntimeFailure):
            await runtime.pull(ref)
        monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "right", reg.host, *reg.creds)))
        image = await runtime.pull(ref)
        assert image.references[0] == ref
    await runtime.image_remove(ref)


async def test_an_oci_layout_imports(runtime, tmp_path):
    docker = tmp_path / "docker.tar"
    mkimage.write_docker_archive(docker, [mkimage.busybox_layer().bytes()], ["cd-oci:latest"])
    layout = tmp_path / "layout.tar"
    with tarfile.open(docker) as src, tarfile.open(layout, "w") as out:
        manifest = json.loads(src.extractfile("manifest.json").read())[0]
        blobs = {}

        def add(data: bytes) -> dict:
            import hashlib

            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            blobs[digest] = data
            return {"digest": digest, "size": len(data)}

        config = add(src.extractfile(manifest["Config"]).read())
        layers = [add(src.extractfile(member).read()) for member in manifest["Layers"]]
        doc = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer} for layer in layers]}
        top = add(json.dumps(doc).encode())
        index = {"schemaVersion": 2, "manifests": [{"mediaType": doc["mediaType"], **top,
                                                    "annotations": {"io.containerd.image.name":
                                                                    "docker.io/library/cd-oci:latest"}}]}
        for name, data in [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                           ("index.json", json.dumps(index).encode()),
                           *((f"blobs/sha256/{d.removeprefix('sha256:')}", b) for d, b in blobs.items())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    imported = await runtime.import_image(layout)
    assert [i.references for i in imported] == [("cd-oci:latest",)]
    assert (await runtime.image_inspect("cd-oci:latest"))["Id"] == config["digest"]
    await runtime.image_remove("cd-oci:latest")
