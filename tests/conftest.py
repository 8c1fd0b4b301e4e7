"""Shared fixtures: locally built images, the real Docker Engine, per-test namespaces and state dirs."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from orchestr.testing import images as mkimage

pytest_plugins = ["orchestr.testing.plugin"]  # the conformance kit's fixtures, for test_conformance.py

ROOT = Path(__file__).resolve().parent.parent

TEST_IMAGE = "orchestr-test/busybox:latest"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="session")
def busybox_archive(tmp_path_factory) -> Path:
    """A `docker save` archive of a busybox-static root filesystem, tagged TEST_IMAGE."""
    path = tmp_path_factory.mktemp("images") / "busybox.tar"
    mkimage.busybox_image(path, [TEST_IMAGE])
    return path


def _docker_ok() -> str | None:
    if not shutil.which("docker"):
        return "the docker command is not installed"
    proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    return None if proc.returncode == 0 else f"the Docker Engine does not answer: {proc.stderr.strip()}"


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A real Docker Engine; its absence fails the test (the README's test command starts one)."""
    if problem := _docker_ok():
        pytest.fail(f"{problem}; run `make test`, which starts dockerd", pytrace=False)


@pytest.fixture(scope="session")
def docker_image(docker_engine, busybox_archive) -> str:
    """TEST_IMAGE, loaded into the Docker Engine."""
    subprocess.run(["docker", "load", "-i", str(busybox_archive)], check=True, capture_output=True)
    return TEST_IMAGE


def _cri_containerd_module():
    spec = importlib.util.spec_from_file_location("cri_containerd", ROOT / "scripts" / "cri_containerd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def cri_runtime(tmp_path_factory):
    """The tests' own CRI runtime: a second containerd with its own root, state, socket and CNI config
    (scripts/cri_containerd.py), at ORCHESTR_CRI_ENDPOINT for the whole session; removed with every pod after.
    A CRI runtime that does not start fails the tests that need it."""
    runtime = _cri_containerd_module().CriContainerd(tmp_path_factory.mktemp("cri") / "containerd")
    try:
        endpoint = runtime.start()
    except Exception as e:  # noqa: BLE001 - reported as the failure it is
        pytest.fail(f"the tests' CRI runtime (containerd's CRI plugin) did not start: {e}", pytrace=False)
    patch = pytest.MonkeyPatch()
    patch.setenv("ORCHESTR_CRI_ENDPOINT", endpoint)
    try:
        yield runtime
    finally:
        patch.undo()
        runtime.stop()


@pytest.fixture(scope="session")
def cri_image(cri_runtime, busybox_archive) -> str:
    """TEST_IMAGE, imported into the tests' CRI runtime."""
    cri_runtime.ctr("images", "import", str(busybox_archive))
    return TEST_IMAGE


@pytest.fixture(scope="session")
def containerd_namespace():
    """A containerd namespace of the session's own for the containerd runtime (ORCHESTR_CONTAINERD_NAMESPACE), so
    its leak checks see only what these tests made; whatever is left in it is removed after, and the namespace."""
    if not shutil.which("ctr"):
        pytest.fail("ctr is not installed: containerd is missing; run `make test`, which installs and starts it",
                    pytrace=False)
    name = f"orchestr-test-{uuid.uuid4().hex[:8]}"
    patch = pytest.MonkeyPatch()
    patch.setenv("ORCHESTR_CONTAINERD_NAMESPACE", name)
    try:
        yield name
    finally:
        patch.undo()
        containerd_clean(name)


def ctr(namespace: str, *args: str) -> str:
    return subprocess.run(["ctr", "-n", namespace, *args], capture_output=True, text=True).stdout


def containerd_clean(namespace: str) -> None:
    """Removes every task, container, image, lease and snapshot of a containerd namespace, then the namespace."""
    for id in ctr(namespace, "containers", "ls", "-q").split():
        ctr(namespace, "tasks", "kill", "-a", "-s", "SIGKILL", id)
        for _ in range(50):
            if "STOPPED" in ctr(namespace, "tasks", "ls") or id not in ctr(namespace, "tasks", "ls"):
                break
        ctr(namespace, "tasks", "rm", "-f", id)
        ctr(namespace, "containers", "rm", id)
    for image in ctr(namespace, "images", "ls", "-q").split():
        ctr(namespace, "images", "rm", "--sync", image)
    for lease in ctr(namespace, "leases", "ls", "-q").split():
        ctr(namespace, "leases", "rm", "--sync", lease)
    for _ in range(5):
        keys = [line.split()[0] for line in ctr(namespace, "snapshots", "ls").splitlines()[1:] if line.strip()]
        if not keys:
            break
        for key in keys:
            ctr(namespace, "snapshots", "rm", key)
    subprocess.run(["ctr", "namespaces", "rm", namespace], capture_output=True)


@pytest.fixture
def namespace() -> str:
    """A namespace of this test's own, so tests never see each other's containers."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def state_dir(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "state"
    monkeypatch.setenv("ORCHESTR_STATE_DIR", str(path))
    return path


def docker_containers(namespace: str) -> list[str]:
    """Ids of the engine's containers labelled with namespace, running or not."""
    out = subprocess.run(
        ["docker", "ps", "-aq", "--no-trunc", "--filter", f"label=orchestr.namespace={namespace}"],
        check=True, capture_output=True, text=True,
    ).stdout
    return out.split()


@pytest.fixture
def docker_namespace(docker_image, namespace):
    """A namespace whose engine containers are checked and removed after the test."""
    yield namespace
    left = docker_containers(namespace)
    if left:
        subprocess.run(["docker", "rm", "-f", *left], capture_output=True)
    volumes = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", f"label=orchestr.namespace={namespace}"],
        capture_output=True, text=True,
    ).stdout.split()
    if volumes:
        subprocess.run(["docker", "volume", "rm", "-f", *volumes], capture_output=True)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True)
def short_restart_backoff(monkeypatch):
    """Crash-looping containers in tests wait 100ms doubling to 1s between restarts, not Kubernetes' 10s to 5m;
    a test of the back-off itself sets its own."""
    monkeypatch.setenv("ORCHESTR_RESTART_BACKOFF", "100ms,1s,10s")
