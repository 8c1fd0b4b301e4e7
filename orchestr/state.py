"""The embedded state store: applied specs with revision history, the runtimes in use, and the apply lock.

Actual state always comes from the runtimes; the store only remembers what was asked for, so losing it
loses history but never control of the containers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from pathlib import Path

from .config import private_dir
from .errors import OrchestrError
from .plain import Frozen, record

SCHEMA = """
CREATE TABLE IF NOT EXISTS revisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    applied_at TEXT NOT NULL,
    action TEXT NOT NULL,           -- apply | delete
    namespaces TEXT NOT NULL,       -- JSON list
    sources TEXT NOT NULL,          -- JSON list of spec files
    status TEXT NOT NULL            -- started | converged | failed
);
CREATE TABLE IF NOT EXISTS services (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    revision INTEGER NOT NULL REFERENCES revisions(id),
    spec TEXT NOT NULL,             -- the applied document as JSON
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS service_history (
    revision INTEGER NOT NULL REFERENCES revisions(id),
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT                       -- NULL when the revision removed the service
);
CREATE TABLE IF NOT EXISTS runtimes_used (name TEXT PRIMARY KEY);  -- of stores older than namespace_runtimes
CREATE TABLE IF NOT EXISTS namespace_runtimes (namespace TEXT NOT NULL, name TEXT NOT NULL,
                                               PRIMARY KEY (namespace, name));
CREATE TABLE IF NOT EXISTS controller_restarts (  -- what a running controller restarts, for `get` to show
    runtime TEXT NOT NULL,
    id TEXT NOT NULL,
    restarts INTEGER NOT NULL,      -- restarts the controller made
    next_restart TEXT,              -- RFC 3339, while the container waits out its back-off
    PRIMARY KEY (runtime, id)
);
CREATE TABLE IF NOT EXISTS controller_health (  -- what a running controller's checks found, for `get` to show
    runtime TEXT NOT NULL,
    id TEXT NOT NULL,
    health TEXT NOT NULL,           -- starting | healthy | unhealthy
    reason TEXT NOT NULL,           -- the last check's result
    PRIMARY KEY (runtime, id)
);
"""


CONTROLLER_LOCK = "controller.lock"  # held by the one controller of the state dir
CONTROLLER_STATUS = "controller.json"  # what it says of itself, for `orchestr controller status`


@record
class Revision(Frozen):
    """One apply or delete, as the state store records it."""

    id: int
    applied_at: str
    action: str
    namespaces: list[str]
    sources: list[str]
    status: str


class Store:
    """One SQLite file under the state dir. Every write is one transaction, so a killed apply leaves it readable."""

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            path = self.state_dir / "state.db"
            try:
                private_dir(self.state_dir)
                # applied specs carry their env: the owner's only. SQLite gives -wal and -shm the database's mode.
                os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
                for name in (path, f"{path}-wal", f"{path}-shm"):  # an older orchestr's were 0644
                    with contextlib.suppress(FileNotFoundError):
                        os.chmod(name, 0o600)
                db = sqlite3.connect(path, isolation_level=None, timeout=30)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(SCHEMA)
            except (OSError, sqlite3.Error) as exc:
                raise OrchestrError(f"state store {path}: {exc}") from exc
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextlib.asynccontextmanager
    async def lock(self) -> AsyncIterator[None]:
        """Serialises applies and deletes across processes; the kernel drops it if the holder dies."""
        private_dir(self.state_dir)
        fd = os.open(self.state_dir / "apply.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                import anyio  # here: `orchestr get` does without it

                await anyio.to_thread.run_sync(fcntl.flock, fd, fcntl.LOCK_EX, abandon_on_cancel=True)
            yield
        finally:
            os.close(fd)

    # -- revisions ----------------------------------------------------------------------
    def begin(self, action: str, namespaces: Iterable[str], sources: Iterable[str]) -> int:
        cur = self.db.execute(
            "INSERT INTO revisions (applied_at, action, namespaces, sources, status) VALUES (?, ?, ?, ?, 'started')",
            (_now(), action, json.dumps(sorted(set(namespaces))), json.dumps(list(sources))),
        )
        return int(cur.lastrowid)

    def record_services(self, revision: int, specs: dict[tuple[str, str], dict], removed: Iterable[tuple[str, str]] = ()):
        """Stores the applied documents of this revision; `removed` services are forgotten."""
        db = self.db
        with _transaction(db):
            for (ns, name), doc in specs.items():
                raw = json.dumps(doc, sort_keys=True)
                old = db.execute("SELECT spec FROM services WHERE namespace=? AND name=?", (ns, name)).fetchone()
                if old is None or old[0] != raw:
                    db.execute("INSERT INTO service_history VALUES (?, ?, ?, ?)", (revision, ns, name, raw))
                db.execute("INSERT OR REPLACE INTO services VALUES (?, ?, ?, ?)", (ns, name, revision, raw))
            for ns, name in removed:
                if db.execute("DELETE FROM services WHERE namespace=? AND name=?", (ns, name)).rowcount:
                    db.execute("INSERT INTO service_history VALUES (?, ?, ?, NULL)", (revision, ns, name))

    def finish(self, revision: int, status: str) -> None:
        self.db.execute("UPDATE revisions SET status=? WHERE id=?", (status, revision))

    def revisions(self, namespace: str | None = None, limit: int = 50) -> list[Revision]:
        rows = self.db.execute(
            "SELECT id, applied_at, action, namespaces, sources, status FROM revisions ORDER BY id DESC"
        ).fetchall()
        out = []
        for row in rows:
            rev = Revision(row[0], row[1], row[2], json.loads(row[3]), json.loads(row[4]), row[5])
            if namespace is None or namespace in rev.namespaces:
                out.append(rev)
            if len(out) >= limit:
                break
        return out

    def service_history(self, namespace: str, name: str) -> list[tuple[Revision, dict | None]]:
        """The revisions that changed the service, oldest first, each with its document (None: removed)."""
        rows = self.db.execute(
            "SELECT r.id, r.applied_at, r.action, r.namespaces, r.sources, r.status, h.spec FROM service_history h "
            "JOIN revisions r ON r.id = h.revision WHERE h.namespace=? AND h.name=? ORDER BY r.id",
            (namespace, name)).fetchall()
        return [(Revision(row[0], row[1], row[2], json.loads(row[3]), json.loads(row[4]), row[5]),
                 None if row[6] is None else json.loads(row[6])) for row in rows]

    def services(self, namespace: str | None = None) -> dict[tuple[str, str], dict]:
        """The currently applied documents, by (namespace, name)."""
        query, args = "SELECT namespace, name, spec FROM services", ()
        if namespace is not None:
            query, args = query + " WHERE namespace=?", (namespace,)
        return {(ns, name): json.loads(spec) for ns, name, spec in self.db.execute(query, args)}

    # -- runtimes -----------------------------------------------------------------------
    def note_runtimes(self, names: Iterable[str], namespaces: Iterable[str]) -> None:
        """Remembers which runtimes hold orchestr containers of which namespaces, so that reading and planning
        ask only those (a runtime that is down then stands in the way of its own namespaces only)."""
        rows = [(ns, n) for ns in set(namespaces) for n in set(names)]
        with _transaction(self.db):
            self.db.executemany("INSERT OR IGNORE INTO namespace_runtimes VALUES (?, ?)", rows)

    def runtimes_used(self, namespaces: Iterable[str] | None = None) -> list[str]:
        """The runtimes that have held containers of namespaces (of any namespace when None)."""
        found = {r[0] for r in self.db.execute("SELECT name FROM runtimes_used")}  # namespace unknown: all of them
        if namespaces is None:
            found |= {r[0] for r in self.db.execute("SELECT name FROM namespace_runtimes")}
        else:
            for ns in set(namespaces):
                found |= {r[0] for r in self.db.execute("SELECT name FROM namespace_runtimes WHERE namespace = ?",
                                                        (ns,))}
        return sorted(found)


    # -- the controller's restarts ------------------------------------------------------
    def set_backoff(self, rows: Iterable[tuple[str, str, int, str | None]]) -> None:
        """Replaces the controller's restarts: (runtime, container id, restarts, next restart or None)."""
        rows = list(rows)
        with _transaction(self.db):
            self.db.execute("DELETE FROM controller_restarts")
            self.db.executemany("INSERT INTO controller_restarts VALUES (?, ?, ?, ?)", rows)

    def backoff(self) -> dict[tuple[str, str], tuple[int, str | None]]:
        """(runtime, container id) -> (restarts by the controller, next restart or None)."""
        return {(r, i): (n, at) for r, i, n, at in self.db.execute("SELECT * FROM controller_restarts")}


    def set_health(self, rows: Iterable[tuple[str, str, str, str]]) -> None:
        """Replaces the controller's health records: (runtime, container id, health, reason)."""
        rows = list(rows)
        with _transaction(self.db):
            self.db.execute("DELETE FROM controller_health")
            self.db.executemany("INSERT INTO controller_health VALUES (?, ?, ?, ?)", rows)

    def health(self) -> dict[tuple[str, str], tuple[str, str]]:
        """(runtime, container id) -> (health, reason), as the running controller's checks found them."""
        return {(r, i): (h, why) for r, i, h, why in self.db.execute("SELECT * FROM controller_health")}

    # -- the controller -----------------------------------------------------------------
    def controller_status(self) -> dict | None:
        """What the running controller of this state dir says of itself (orchestr.controller writes it while it
        holds CONTROLLER_LOCK); None when no controller runs."""
        status = self.state_dir / CONTROLLER_STATUS
        if not status.exists():  # the common case, without a lock to try
            return None
        try:
            fd = os.open(self.state_dir / CONTROLLER_LOCK, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads(status.read_text())
            except (FileNotFoundError, ValueError):
                return {}
        finally:
            os.close(fd)
        return None


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection):
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
