"""The controller on the Docker Engine: containers removed or killed with the engine's own CLI come back."""

from __future__ import annotations

import subprocess

import anyio
import pytest

from conftest import TEST_IMAGE
from orchestr.api import Client
from orchestr.controller import Controller
from orchestr.model import State
from orchestr.spec import Service


async def _until(oc: Client, ns: str, check, what: str):
    with anyio.fail_after(60, shield=False):
        while True:
            found = {c.name: c for c in await oc.get(ns)}
            if check(found):
                return found
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_containers_removed_or_killed_with_the_docker_cli_are_repaired(docker_namespace, state_dir):
    ns = docker_namespace
    web = Service.build("web", namespace=ns, image=TEST_IMAGE, replicas=2, command=["sleep", "3600"],
                        stop_grace_period="1s")
    reports = []
    async with Client(state_dir=state_dir, runtime="docker") as oc:
        assert (await oc.apply([web])).ok
        before = {c.name: c for c in await oc.get(ns)}
        async with anyio.create_task_group() as tg:
            await tg.start(Controller(oc, resync=3600, on_report=reports.append).run)
            subprocess.run(["docker", "rm", "-f", before["web-0"].id], check=True, capture_output=True)
            after = await _until(oc, ns, lambda f: "web-0" in f and f["web-0"].id != before["web-0"].id and
                                 f["web-0"].state is State.RUNNING, "web-0 made again")
            # `docker kill` counts as a stop the engine's unless-stopped policy honours: the controller starts it
            subprocess.run(["docker", "kill", before["web-1"].id], check=True, capture_output=True)
            await _until(oc, ns, lambda f: f["web-1"].state is State.RUNNING and f["web-1"].pid != before["web-1"].pid,
                         "web-1 running again")
            tg.cancel_scope.cancel()
        assert after["web-1"].id == before["web-1"].id
        kinds = [(a.kind.value, a.name) for r in reports for a in r.plan]
        assert ("create", "web-0") in kinds and ("start", "web-1") in kinds
        assert all(o.ok for r in reports for o in r.outcomes) and not any(r.error for r in reports)
        await oc.delete([web])
