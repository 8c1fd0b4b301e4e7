"""The conformance kit's pytest plugin: which runtimes the suite runs on, their image, and a clean slate per test.

Loaded by `python -m orchestr.testing` (or `-p orchestr.testing.plugin`). The runtimes come from
`--orchestr-runtime NAME` (repeatable) or, in a test module that imports the suite, its CONFORMANCE_RUNTIMES.
A test module may override `orchestr_plugin_manager` to offer runtimes that are not installed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pluggy
import pytest

from orchestr import plugins
from orchestr.config import Config
from orchestr.errors import NotFound
from orchestr.model import L_NAMESPACE, Container, ContainerSpec, RestartPolicy
from orchestr.runtime import Runtime, supports

from . import images

pytest.register_assert_rewrite("orchestr.testing.suite")  # its failed asserts show their values, as a test module's

KIT_LABEL = "org.orchestr.conformance"  # on every container and image the kit makes


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("orchestr", "orchestr runtime conformance")
    group.addoption("--orchestr-runtime", action="append", default=[], metavar="NAME",
                    help="run the conformance suite against this installed runtime (repeatable)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "runtime_name" not in metafunc.fixturenames:
        return
    names = metafunc.config.getoption("orchestr_runtime") or getattr(metafunc.module, "CONFORMANCE_RUNTIMES", ())
    if not names:
        raise pytest.UsageError("name the runtime to check: --orchestr-runtime NAME (see `orchestr plugins`)")
    metafunc.parametrize("runtime_name", list(names), scope="session")


def _in_thread(work: Callable[[], Awaitable[Any]]) -> Any:
    """Runs work in an event loop of its own: session set-up happens outside any test's loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, work).result()


@dataclass
class Target:
    """One runtime under test for the whole session: how to open it, and the kit's image in it."""

    name: str
    config: Config
    pm: pluggy.PluginManager
    image: str  # a reference of the session's own, so two sessions never remove each other's
    archive: Path

    def open(self) -> Runtime:
        return plugins.open_runtime(self.name, self.config, self.pm)


@pytest.fixture(scope="session")
def orchestr_plugin_manager() -> pluggy.PluginManager:
    """The plugins whose runtimes can be checked: every installed one."""
    return plugins.new_plugin_manager()


@pytest.fixture(scope="session")
def conformance_target(runtime_name, orchestr_plugin_manager, tmp_path_factory) -> Target:
    """runtime_name opened over a state dir of its own, with the kit's busybox image in it (removed at the end)."""
    work = tmp_path_factory.mktemp(f"conformance-{runtime_name}")
    image = f"orchestr-conformance/busybox:{secrets.token_hex(4)}"
    archive = work / "busybox.tar"
    images.busybox_image(archive, [image], labels={KIT_LABEL: "1"})
    target = Target(runtime_name, Config(state_dir=work / "state"), orchestr_plugin_manager, image, archive)

    async def load() -> None:
        runtime = target.open()
        try:
            if supports(runtime, "image_import"):
                await runtime.import_image(archive)
            else:
                await runtime.ensure_image(image)
        finally:
            await runtime.close()

    async def unload() -> None:
        runtime = target.open()
        try:
            with contextlib.suppress(NotFound):
                await runtime.image_remove(image, force=True)
        finally:
            await runtime.close()

    _in_thread(load)
    yield target
    _in_thread(unload)


@dataclass
class Kit:
    """One test's view of the runtime: specs in namespaces of the test's own, and everything it made undone."""

    target: Target
    runtime: Runtime
    namespace: str
    namespaces: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    opened: list[Runtime] = field(default_factory=list)

    @property
    def image(self) -> str:
        return self.target.image

    def require(self, capability: str) -> None:
        """Skips the test unless the runtime declares capability (and implements its verbs)."""
        if not supports(self.runtime, capability):
            pytest.skip(f"{self.runtime.name} does not declare the {capability!r} capability")

    def new_namespace(self) -> str:
        namespace = f"kit-{secrets.token_hex(5)}"
        self.namespaces.append(namespace)
        return namespace

    def spec(self, name: str, *command: str, namespace: str | None = None, **fields: Any) -> ContainerSpec:
        """A spec with orchestr's ownership labels, no network and no restarts; command as given (none: the
        image's)."""
        namespace = namespace or self.namespace
        labels = {L_NAMESPACE: namespace, KIT_LABEL: "1", **fields.pop("labels", {})}
        fields.setdefault("restart_policy", RestartPolicy.NEVER)
        fields.setdefault("network", "none")
        return ContainerSpec(name=name, namespace=namespace, image=fields.pop("image", self.image), labels=labels,
                             command=tuple(command) or None, **fields)

    async def create(self, spec: ContainerSpec) -> Container:
        container = await self.runtime.create(spec)
        self.containers.append(container.id)
        return container

    async def run(self, name: str, *command: str, **fields: Any) -> Container:
        """Creates and starts a container; returns it as inspected once started."""
        container = await self.create(self.spec(name, *command, **fields))
        await self.runtime.start(container.id)
        return await self.runtime.inspect(container.id)

    def reopen(self) -> Runtime:
        """A fresh runtime object over the same state, as a new orchestr process would open it."""
        runtime = self.target.open()
        self.opened.append(runtime)
        return runtime

    async def clean(self) -> None:
        """Deletes whatever the test made, then checks that the runtime lists nothing of it."""
        problems: list[str] = []

        async def attempt(what: str, call: Awaitable[Any]) -> None:
            try:
                await call
            except NotFound:
                pass
            except Exception as e:  # go on: clean the rest, then report
                problems.append(f"{what}: {type(e).__name__}: {e}")

        with anyio.CancelScope(shield=True), anyio.move_on_after(120):
            for namespace in self.namespaces:
                for c in await self.runtime.list(namespace):
                    await attempt(f"delete {c.id}", self.runtime.delete(c.id, force=True))
            for id in self.containers:
                await attempt(f"delete {id}", self.runtime.delete(id, force=True))
            for ref in self.images:
                await attempt(f"remove image {ref}", self.runtime.image_remove(ref, force=True))
            left = [f"{c.namespace}/{c.name}" for ns in self.namespaces for c in await self.runtime.list(ns)]
            if left:
                problems.append(f"still listed after delete: {', '.join(left)}")
            elif supports(self.runtime, "remove_network"):  # what a namespace's network keeps after its containers
                for namespace in self.namespaces:
                    await attempt(f"remove network {namespace}", self.runtime.remove_network(namespace))
            for runtime in [*self.opened, self.runtime]:
                await attempt("close", runtime.close())
        if problems:
            pytest.fail(f"{self.target.name}: cleaning up after the test failed: " + "; ".join(problems),
                        pytrace=False)


@pytest.fixture
async def kit(conformance_target: Target, anyio_backend) -> AsyncIterator[Kit]:
    """The runtime under test, opened for this test; afterwards everything the test made is deleted."""
    made = Kit(conformance_target, conformance_target.open(), "")
    made.namespace = made.new_namespace()
    try:
        yield made
    finally:
        await made.clean()
