"""The controller on the native runtime, with real containers: as a library task and as `orchestr controller`.

Drift repaired (a container deleted behind its back, one whose process is killed), one controller per state dir,
SIGTERM leaving containers running and a new controller adopting them, a simulated reboot, watched spec files,
metrics scraped and parsed, and `orchestr events`. No test asserts a timing: waits are for states.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from orchestr.api import Client
from orchestr.backoff import Backoff
from orchestr.controller import Controller, read_status
from orchestr.model import Container, State
from orchestr.planner import Kind, plan
from orchestr.spec import Service
from conftest import TEST_IMAGE
from test_native_cli import (  # noqa: F401 - ns is a fixture
    ORCHESTR,
    _env,
    alive,
    by_name,
    cgroup_dirs,
    cgroup_procs,
    get_json,
    keeper_pid,
    ns,
    orc,
    service,
    supervisor_pid,
    until,
    write,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the native runtime needs root")


@contextlib.contextmanager
def controller(state_dir: Path, tmp_path: Path, *args: str):
    """`orchestr controller` in the background, once its first pass is done; SIGTERM and its exit after."""
    log = tmp_path / f"controller-{time.monotonic_ns()}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([ORCHESTR, "controller", "--metrics-address", "127.0.0.1:0", "--resync", "1h", *args],
                                env=_env(state_dir), stdout=subprocess.DEVNULL, stderr=err)
    try:
        until(lambda: proc.poll() is not None or (status := read_status(state_dir) or {}).get("pid") == proc.pid
              and status.get("lastPass"), "the controller's first pass")
        assert proc.poll() is None, log.read_text()
        proc.log = log  # type: ignore[attr-defined]
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def journal(state_dir: Path) -> list[dict]:
    path = state_dir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def scrape(address: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# -- the library ----------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_the_library_task_repairs_a_container_deleted_behind_its_back(ns, tmp_path, state_dir):
    spec = write(tmp_path / "app.yaml", service("web", ns, replicas=2))
    reports = []
    async with Client(state_dir=state_dir, runtime="native") as oc:
        from orchestr.spec import load

        await oc.apply(load([spec]))
        before = {c.name: c for c in await oc.get(ns)}
        async with anyio.create_task_group() as tg:
            await tg.start(Controller(oc, resync=3600, on_report=reports.append).run)
            assert reports[0].trigger == "start" and not reports[0].plan  # what apply left is converged
            # deleted with the runtime's own verb, not through orchestr's reconcile
            await oc.runtime("native").delete(before["web-0"].id, force=True)
            with anyio.fail_after(60):
                while not any(r.plan for r in reports[1:]):
                    await anyio.sleep(0.05)
            repair = next(r for r in reports[1:] if r.plan)
            assert repair.trigger.split()[0] in ("die", "destroy") and repair.error is None
            assert [(a.kind, a.name, a.reason) for a in repair.plan] == [(Kind.CREATE, "web-0", "missing")]
            assert all(o.ok for o in repair.outcomes)
            tg.cancel_scope.cancel()
        after = {c.name: c for c in await oc.get(ns)}
        assert after["web-0"].state is State.RUNNING and after["web-0"].id != before["web-0"].id
        assert after["web-1"].id == before["web-1"].id and after["web-1"].pid == before["web-1"].pid
        await oc.delete(load([spec]))


def _exited(name: str, exit_code: int, finished: str, **kw) -> Container:
    svc = Service.build(name, image="busybox:1", runtime="cri")
    labels = {"orchestr.namespace": "default", "orchestr.service": name, "orchestr.replica": "0",
              "orchestr.spec-hash": svc.spec_hash}
    return Container(id=f"id-{name}", name=f"{name}-0", namespace="default", runtime="cri", image="busybox:1",
                     state=State.EXITED, labels=labels, exit_code=exit_code, finished_at=finished, **kw)


def test_the_controllers_own_restarts_back_off_exponentially(state_dir):
    """The gate in front of restarts the controller makes itself (a runtime without restarts: cri), on plain data:
    each new exit is restarted after the back-off's next delay, the first at once."""
    svc = Service.build("crash", image="busybox:1", runtime="cri")
    ctl = Controller(Client(state_dir=state_dir), backoff=Backoff(first=30, limit=60, reset=600))
    delays = []
    for n in range(4):
        c = _exited("crash", 1, f"t{n}")
        planned = plan([svc], [c], default_runtime="cri")
        kept, deferred = ctl._gate(planned, [c])
        loop = ctl._loops[c.id]
        delays.append(round(loop.due - time.monotonic()))
        if kept:  # restarted: as the executor would report it
            assert [a.kind for a in kept] == [Kind.START] and not deferred
            loop.waiting, loop.total = False, loop.total + 1
        else:
            assert [a.kind for a in deferred] == [Kind.START]
            loop.due = time.monotonic()  # its back-off over: the next pass restarts it
            assert ctl._gate(planned, [c])[0]
            loop.waiting, loop.total = False, loop.total + 1
    assert delays == [0, 30, 60, 60]
    # a run of `reset` seconds ends the loop: the next exit is restarted at once again
    ctl._loops["id-crash"].started -= 600
    ctl._gate(plan([svc], [], default_runtime="cri"), [replace(_exited("crash", 0, "t9"), state=State.RUNNING)])
    assert "id-crash" not in ctl._loops
    ctl.oc.store.close()


# -- the command ----------------------------------------------------------------------------------

def test_one_controller_per_state_dir_sigterm_leaves_containers_and_a_new_one_adopts_them(ns, tmp_path, state_dir):
    spec = write(tmp_path / "app.yaml", service("web", ns, replicas=2))
    orc("apply", "-f", spec, state_dir=state_dir, check=True)
    with controller(state_dir, tmp_path) as first:
        second = orc("controller", "--metrics-address", "", state_dir=state_dir)
        assert second.returncode == 1
        assert second.stderr == f"orchestr: a controller already runs for state dir {state_dir} (pid {first.pid})\n"
        status = orc("controller", "status", state_dir=state_dir, check=True).stdout
        assert status.startswith(f"controller running: pid {first.pid};") and "(start, 0 actions)" in status
        before = by_name(get_json(ns, state_dir))
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
        lines = [json.loads(line) for line in first.log.read_text().splitlines()]
        assert [e["msg"] for e in lines][-2:] == ["SIGTERM: stopping, containers keep running", "controller stopped"]
    assert orc("controller", "status", state_dir=state_dir).returncode == 1
    after = by_name(get_json(ns, state_dir))
    assert {n: (c["state"], c["pid"]) for n, c in after.items()} == {n: ("running", c["pid"]) for n, c in before.items()}
    with controller(state_dir, tmp_path):
        starts = [e for e in journal(state_dir) if e.get("trigger") == "start"]
        assert len(starts) == 2 and starts[-1]["plan"] == []  # adopted: nothing restarted, nothing recreated
        again = by_name(get_json(ns, state_dir))
        assert {n: (c["id"], c["pid"], c["restarts"]) for n, c in again.items()} == \
            {n: (c["id"], c["pid"], 0) for n, c in before.items()}
    orc("delete", "-f", spec, state_dir=state_dir, check=True)


def test_apply_with_a_controller_running_never_interleaves_with_it(ns, tmp_path, state_dir):
    spec = tmp_path / "app.yaml"
    write(spec, service("web", ns))
    orc("apply", "-f", str(spec), state_dir=state_dir, check=True)
    with controller(state_dir, tmp_path):
        for replicas in (4, 1, 3):
            write(spec, service("web", ns, replicas=replicas))
            # stopped behind the controller's back as the apply begins: both want to act on web-0
            orc("stop", "-n", ns, "web-0", "-t", "0", state_dir=state_dir, check=True)
            out = orc("apply", "-f", str(spec), state_dir=state_dir, check=True).stdout
            assert "failed" not in out.replace("0 failed", "")
            until(lambda: sorted((c["name"], c["state"]) for c in get_json(ns, state_dir)) ==
                  [(f"web-{i}", "running") for i in range(replicas)], f"{replicas} replicas running")
    # whoever started web-0 again, nobody made a replica twice or deleted one the other had made
    actions = [a for e in journal(state_dir) for a in e.get("plan", ())]
    assert all(a["outcome"] in ("ok", "deferred") and a["reason"] not in ("duplicate", "missing")
               for a in actions), actions
    orc("delete", "-f", str(spec), state_dir=state_dir, check=True)


def test_a_reboot_brings_back_always_services_and_leaves_finished_jobs_down(ns, tmp_path, state_dir):
    spec = write(tmp_path / "app.yaml", service("web", ns),
                 service("job", ns, command=["sh", "-c", "exit 0"], extra="  restartPolicy: OnFailure\n"))
    orc("apply", "-f", spec, "--settle", "0", state_dir=state_dir, check=True)
    until(lambda: by_name(get_json(ns, state_dir))["job-0"]["state"] == "exited", "the job's end")
    before = by_name(get_json(ns, state_dir))
    with controller(state_dir, tmp_path) as ctl:
        # what a reboot does: every orchestr process and container gone, their cgroups and mounts with them
        pids = [ctl.pid, keeper_pid(state_dir), supervisor_pid(state_dir), *cgroup_procs(before["web-0"]["id"])]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        ctl.wait(30)
        until(lambda: not any(alive(p) for p in pids), "every process's end")
    ids = {c["id"] for c in before.values()}
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if str(state_dir) in line or any(i in line for i in ids)]
    for mount in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], check=True)
    for d in cgroup_dirs(ids):
        os.rmdir(d)
    assert {c["state"] for c in get_json(ns, state_dir)} == {"exited"}

    with controller(state_dir, tmp_path):
        after = by_name(get_json(ns, state_dir))
        assert after["web-0"]["state"] == "running" and after["web-0"]["pid"] != before["web-0"]["pid"]
        assert (after["job-0"]["state"], after["job-0"]["exitCode"]) == ("exited", 0)  # OnFailure, exited 0
        [start] = [e for e in journal(state_dir) if e.get("trigger") == "start"][-1:]
        assert [(a["kind"], a["name"], a["outcome"]) for a in start["plan"]] == [("start", "web-0", "ok")]
    orc("delete", "-f", spec, state_dir=state_dir, check=True)


def test_watched_spec_files_edited_valid_invalid_added_and_removed(ns, tmp_path, state_dir):
    specs = tmp_path / "specs"
    specs.mkdir()
    write(specs / "web.yaml", service("web", ns))
    (specs / "notes.txt").write_text("not a spec: only *.yaml and *.yml are read")
    with controller(state_dir, tmp_path, "-f", str(specs)) as ctl:
        until(lambda: [c["name"] for c in get_json(ns, state_dir)] == ["web-0"], "web from the watched directory")
        write(specs / "web.yaml", service("web", ns, replicas=2))
        until(lambda: sorted(c["name"] for c in get_json(ns, state_dir)) == ["web-0", "web-1"], "the edit applied")
        write(specs / "db.yml", service("db", ns))
        until(lambda: "db-0" in by_name(get_json(ns, state_dir)), "the added file applied")
        before = by_name(get_json(ns, state_dir))
        (specs / "web.yaml").write_text(service("web", ns, replicas=3).replace("replicas: 3", "replicas: lots"))
        error = until(lambda: next((e for e in map(json.loads, ctl.log.read_text().splitlines())
                                    if e["level"] == "error"), None), "the invalid edit reported")
        assert error["msg"] == "spec files not applied: the last good ones stay"
        assert error["error"].startswith(f"{specs / 'web.yaml'}:7: spec.replicas: ")
        assert by_name(get_json(ns, state_dir)) == before  # changes nothing
        (specs / "web.yaml").unlink()
        until(lambda: sorted(c["name"] for c in get_json(ns, state_dir)) == ["db-0"], "the removed file's services gone")
    orc("delete", "-n", ns, "--all", state_dir=state_dir, check=True)


def test_metrics_and_healthz_are_served_on_the_metrics_address(ns, tmp_path, state_dir):
    from prometheus_client.parser import text_string_to_metric_families

    spec = write(tmp_path / "app.yaml", service("web", ns, replicas=2),
                 service("crash", ns, command=["sh", "-c", "exit 1"]))
    orc("apply", "-f", spec, "--settle", "0", state_dir=state_dir, check=True)
    with controller(state_dir, tmp_path):
        address = read_status(state_dir)["metricsAddress"]
        assert scrape(address, "/healthz")[0] == 200
        until(lambda: by_name(get_json(ns, state_dir))["crash-0"]["restarts"] >= 2, "crash-0's restarts")
        web = by_name(get_json(ns, state_dir))["web-0"]
        os.kill(web["pid"], signal.SIGKILL)  # a pass follows its die event

        def families() -> dict:
            status, text = scrape(address, "/metrics")
            assert status == 200
            return {f.name: f for f in text_string_to_metric_families(text)}

        def containers(f: dict) -> dict:
            return {(s.labels["service"], s.labels["state"]): s.value for s in f["orchestr_containers"].samples
                    if s.labels["namespace"] == ns}

        # the pass its die event triggers may still see web-0 waiting for its restart: a later one sees it back
        found = until(lambda: (f := families())["orchestr_reconcile_duration_seconds"].samples and
                      any(s.labels.get("trigger") == "die" for s in f["orchestr_reconcile_passes"].samples) and
                      containers(f).get(("web", "running")) == 2 and f, "a pass after web-0's end and restart")
        assert containers(found).get(("web", "backoff")) is None
        restarts = next(s.value for s in found["orchestr_restarts"].samples if s.name == "orchestr_restarts_total")
        assert restarts >= 1  # the supervisor's restarts, seen in its events
        count = next(s.value for s in found["orchestr_reconcile_duration_seconds"].samples
                     if s.name.endswith("_count"))
        assert count >= 2
        assert {"orchestr_plan_actions", "orchestr_runtime_errors"} <= set(found)
        assert scrape(address, "/nothing")[0] == 404
    orc("delete", "-f", spec, state_dir=state_dir, check=True)


def test_events_streams_container_events_and_the_controllers_passes(ns, tmp_path, state_dir):
    out = tmp_path / "events.jsonl"
    text = tmp_path / "events.txt"
    spec = write(tmp_path / "app.yaml", service("web", ns), service("crash", ns, command=["sh", "-c", "exit 3"]))
    with open(out, "w") as f, open(text, "w") as t:
        events = subprocess.Popen([ORCHESTR, "events", "-n", ns, "-o", "json"], env=_env(state_dir), stdout=f)
        table = subprocess.Popen([ORCHESTR, "events", "-n", ns], env=_env(state_dir), stdout=t)
    try:
        def seen() -> list[dict]:
            return [json.loads(line) for line in out.read_text().splitlines()]

        # the streams begin when the commands have subscribed: one-off runs until both show one
        def subscribed() -> bool:
            orc("run", "--rm", "-n", ns, "--network", "none", TEST_IMAGE, "true", state_dir=state_dir, check=True)
            return any(e["action"] == "destroy" for e in seen()) and "destroy" in text.read_text()
        until(subscribed, "the event streams")
        orc("apply", "-f", spec, "--settle", "0", state_dir=state_dir, check=True)
        with controller(state_dir, tmp_path):
            orc("stop", "-n", ns, "web-0", state_dir=state_dir, check=True)  # the controller starts it again
            until(lambda: any(e["action"] == "reconcile" for e in seen()), "the controller's pass in the stream")
            # the two streams are two subscribers: each gets the pass in its own time
            until(lambda: "controller  reconcile" in text.read_text(), "the controller's pass in the table")
            until(lambda: len([e for e in seen() if e["action"] == "restart" and e["name"] == "crash-0"]) >= 3,
                  "crash-0's restarts")
    finally:
        events.terminate()
        table.terminate()
        events.wait(10)
        table.wait(10)
        orc("delete", "-f", spec, state_dir=state_dir)
    got = seen()
    assert {e["namespace"] for e in got if "namespace" in e} == {ns}
    web = [e["action"] for e in got if e.get("name") == "web-0"]
    assert web[:2] == ["create", "start"] and "die" in web
    crash = [e for e in got if e.get("name") == "crash-0"]
    assert {e["exitCode"] for e in crash if e["action"] == "die"} == {3}
    delays = [e["delay"] for e in crash if e["action"] == "restart"]
    assert delays[:3] == [0, 0.1, 0.2]  # the tests' back-off: 100ms doubling
    [repair] = [e for e in got if e["action"] == "reconcile"]
    # woken by web-0's end, or by one of crash-0's that came first
    assert repair["source"] == "controller" and repair["trigger"].startswith(f"die {ns}/")
    assert repair["plan"] == [{"kind": "start", "namespace": ns, "name": "web-0", "runtime": "native",
                               "reason": "exited (Always)", "outcome": "ok"}]
    lines = text.read_text().splitlines()
    assert any(f"native  {ns}/crash-0  die  exitCode=3" in line for line in lines)
    assert any(f"controller  reconcile  trigger=die {ns}/" in line and f"start {ns}/web-0 ok" in line
               for line in lines)


# -- a runtime that restarts nothing itself: the controller's own back-off ---------------------------

@pytest.mark.anyio
async def test_on_cri_the_controller_restarts_a_crash_loop_with_back_off_and_get_shows_it(cri_image, namespace,
                                                                                         tmp_path, monkeypatch):
    from orchestr.runtime import supports

    monkeypatch.setenv("ORCHESTR_RESTART_BACKOFF", "1s,2s,1m")
    crash = Service.build("crash", namespace=namespace, image=TEST_IMAGE, runtime="cri", network="none",
                          command=["sh", "-c", "exit 4"], stop_grace_period="1s")
    state_dir = tmp_path / "state"
    async with Client(state_dir=state_dir, runtime="cri") as oc:
        assert not supports(oc.runtime("cri"), "restarts")  # nobody restarts a CRI container but orchestr
        try:
            await oc.apply([crash], settle=0)
            async with anyio.create_task_group() as tg:
                await tg.start(Controller(oc, resync=3600).run)
                with anyio.fail_after(60):
                    while len([e for e in journal(state_dir) if e["action"] == "restart"]) < 2:
                        await anyio.sleep(0.05)
                    while not (waiting := [c for c in await oc.get(namespace) if c.backing_off]):
                        await anyio.sleep(0.05)
                [c] = waiting
                assert c.exit_code == 4 and c.restarts >= 1 and c.as_dict()["state"] == "backoff"
                assert c.as_dict()["nextRestart"] == c.next_restart
                tg.cancel_scope.cancel()
            restarts = [e for e in journal(state_dir) if e["action"] == "restart"]
            assert [(e["name"], e["delay"], e["exitCode"]) for e in restarts[:2]] == [
                ("crash-0", 1, 4), ("crash-0", 2, 4)]  # the first restart was at once, and is not journaled
            # with no controller running, nobody restarts it: get shows no back-off
            assert not any(c.backing_off for c in await oc.get(namespace))
        finally:
            await oc.delete(namespace=namespace)


def test_a_deferred_restart_holds_back_what_waits_for_it_and_nothing_else():
    from orchestr.controller import _subset

    db = Service.build("db", image="busybox:1", runtime="cri")
    web = Service.build("web", image="busybox:1", runtime="cri", depends_on=["db"])
    other = Service.build("other", image="busybox:1", runtime="cri")
    exited = [replace(_exited(s.name, 1, "t"), id=f"id-{s.name}",
                      labels={**_exited(s.name, 1, "t").labels, "orchestr.spec-hash": s.spec_hash})
              for s in (db, web, other)]
    planned = plan([db, web, other], exited, default_runtime="cri")
    assert [(a.kind, a.name) for a in planned] == [(Kind.START, "db-0"), (Kind.START, "other-0"),
                                                  (Kind.START, "web-0")]
    kept = _subset(planned, [1, 2])  # db-0's restart deferred
    assert [(a.name, a.after) for a in kept] == [("other-0", ())]
    kept = _subset(planned, [0, 2])
    assert [(a.name, a.after) for a in kept] == [("db-0", ()), ("web-0", (0,))]
