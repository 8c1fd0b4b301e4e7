"""The controller on the containerd runtime: a container removed with containerd's own CLI is made again."""

from __future__ import annotations

import anyio
import pytest

from conftest import TEST_IMAGE, ctr
from orchestr.api import Client
from orchestr.controller import Controller
from orchestr.model import State
from orchestr.spec import Service
from test_containerd_cli import cd_ns, containerd_image  # noqa: F401 - fixtures


@pytest.mark.anyio
async def test_a_container_removed_with_ctr_is_made_again(cd_ns, containerd_namespace, state_dir):  # noqa: F811
    ns = cd_ns
    web = Service.build("web", namespace=ns, image=TEST_IMAGE, runtime="containerd", network="none",
                        command=["sleep", "3600"], stop_grace_period="1s")
    reports = []
    async with Client(state_dir=state_dir, runtime="containerd") as oc:
        assert (await oc.apply([web])).ok
        [before] = await oc.get(ns)
        async with anyio.create_task_group() as tg:
            await tg.start(Controller(oc, resync=3600, on_report=reports.append).run)
            # removed behind orchestr's back, with containerd's own CLI
            ctr(containerd_namespace, "tasks", "delete", "-f", before.id)  # -f: the running task is killed first
            ctr(containerd_namespace, "containers", "delete", before.id)
            with anyio.fail_after(60):
                while not any(a.kind.value == "create" for r in reports for a in r.plan) or not (
                        (c := await oc.get(ns)) and c[0].state is State.RUNNING and c[0].pid != before.pid):
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        kinds = [(a.kind.value, a.name) for r in reports for a in r.plan]
        assert ("create", "web-0") in kinds, reports
        assert all(o.ok for r in reports for o in r.outcomes) and not any(r.error for r in reports)
        [after] = await oc.get(ns)
        assert after.state is State.RUNNING
        await oc.delete([web])
