"""The state store: revisions, applied documents, the cross-process apply lock, and surviving a kill."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from orchestr import speccache
from orchestr.errors import OrchestrError
from orchestr.state import Store


def test_revisions_and_services_roundtrip(tmp_path):
    store = Store(tmp_path)
    rev = store.begin("apply", ["shop"], ["shop.yaml"])
    store.record_services(rev, {("shop", "web"): {"image": "a"}, ("shop", "db"): {"image": "b"}})
    store.finish(rev, "converged")
    rev2 = store.begin("apply", ["shop"], ["shop.yaml"])
    store.record_services(rev2, {("shop", "web"): {"image": "c"}}, removed=[("shop", "db")])
    store.finish(rev2, "failed")
    store.close()

    again = Store(tmp_path)
    assert again.services() == {("shop", "web"): {"image": "c"}}
    assert [(r.id, r.status) for r in again.revisions("shop")] == [(rev2, "failed"), (rev, "converged")]
    assert again.revisions("other") == []
    history = again.db.execute("SELECT revision, name, spec FROM service_history ORDER BY rowid").fetchall()
    assert history == [
        (rev, "web", '{"image": "a"}'),
        (rev, "db", '{"image": "b"}'),
        (rev2, "web", '{"image": "c"}'),
        (rev2, "db", None),
    ]


def test_runtimes_used_are_remembered_per_namespace(tmp_path):
    store = Store(tmp_path)
    store.note_runtimes(["docker", "native", "docker"], ["web"])
    store.note_runtimes(["native"], ["jobs", "jobs"])
    again = Store(tmp_path)
    assert again.runtimes_used() == ["docker", "native"]
    assert again.runtimes_used(["jobs"]) == ["native"] and again.runtimes_used(["web", "jobs"]) == ["docker", "native"]
    assert again.runtimes_used(["elsewhere"]) == []
    # a store written before namespaces were recorded: its runtimes count for every namespace
    again.db.execute("INSERT INTO runtimes_used VALUES ('hostproc')")
    assert Store(tmp_path).runtimes_used(["elsewhere"]) == ["hostproc"]


HOLDER = textwrap.dedent(
    """
    import sys, time, anyio
    from orchestr.state import Store

    async def main():
        store = Store(sys.argv[1])
        async with store.lock():
            print("locked", flush=True)
            time.sleep(float(sys.argv[2]))
            print("unlocking", flush=True)

    anyio.run(main)
    """
)


@pytest.mark.anyio
async def test_lock_serialises_processes(tmp_path):
    """A second apply waits for the first; it never runs inside it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), "1.5"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    store = Store(tmp_path)
    async with store.lock():
        # The holder printed "unlocking" before releasing, so it must be there already.
        assert holder.stdout.readline().strip() == "unlocking"
    assert holder.wait(10) == 0


@pytest.mark.anyio
async def test_lock_is_released_when_the_holder_is_killed(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), "600"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    with anyio.fail_after(30):
        async with Store(tmp_path).lock():
            pass


WRITER = textwrap.dedent(
    """
    import sys
    from orchestr.state import Store
    store = Store(sys.argv[1])
    rev = store.begin("apply", ["ns"], [])
    store.record_services(rev, {("ns", "web"): {"v": 1}})
    db = store.db
    db.execute("BEGIN IMMEDIATE")
    for i in range(200000):
        db.execute("INSERT INTO service_history VALUES (?, 'ns', ?, 'x')", (rev, f"junk{i}"))
        if i == 1000:
            print("writing", flush=True)
    db.execute("COMMIT")
    """
)


def test_a_killed_writer_leaves_a_readable_store(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    store = Store(tmp_path)
    assert store.services() == {("ns", "web"): {"v": 1}}
    # the uncommitted transaction is gone, and the store takes new writes
    junk = store.db.execute("SELECT count(*) FROM service_history WHERE name LIKE 'junk%'").fetchone()[0]
    assert junk == 0
    rev = store.begin("apply", ["ns"], [])
    store.finish(rev, "converged")
    assert store.revisions()[0].status == "converged"


# -- modes: the state dir holds specs with their secrets, and the native runtime's layers and containers -----

def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _use(state: Path) -> Store:
    """Everything of the core that writes under a state dir: the store (held open), its lock, the spec cache."""
    store = Store(state)
    store.record_services(store.begin("apply", ["shop"], ["shop.yaml"]), {("shop", "web"): {"env": {"K": "v"}}})

    async def locked() -> None:
        async with store.lock():
            pass

    anyio.run(locked)
    speccache.remember(state, "0" * 64, [])
    return store


def test_a_fresh_state_dir_is_its_owners_only(tmp_path):
    old = os.umask(0)  # whatever the umask
    try:
        state = tmp_path / "parent" / "state"  # parents orchestr makes are its owner's only too
        store = _use(state)
        assert _mode(tmp_path / "parent") == _mode(state) == _mode(state / "spec-cache") == 0o700
        for name in ("state.db", "state.db-wal", "state.db-shm", "apply.lock", f"spec-cache/{'0' * 64}.json"):
            assert _mode(state / name) == 0o600, name
        store.close()
    finally:
        os.umask(old)


def test_an_older_orchestrs_loose_state_dir_is_tightened(tmp_path):
    state = tmp_path / "state"
    (state / "spec-cache").mkdir(parents=True)
    sqlite3.connect(state / "state.db").close()
    for path, mode in ((state, 0o755), (state / "spec-cache", 0o755), (state / "state.db", 0o644)):
        path.chmod(mode)
    store = _use(state)
    assert (_mode(state), _mode(state / "spec-cache"), _mode(state / "state.db")) == (0o700, 0o700, 0o600)
    assert store.services() == {("shop", "web"): {"env": {"K": "v"}}}
    store.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_a_state_dir_owned_by_another_user_is_refused_and_left_alone(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)
    state.chmod(0o755)
    with pytest.raises(OrchestrError, match=r"owned by uid 65534, not by this user \(uid 0\).*chown it or use another"):
        Store(state).services()
    assert os.listdir(state) == [] and _mode(state) == 0o755
