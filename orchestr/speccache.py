"""Remembers what validated spec files asked for, so re-applying unchanged files needs no validation.

A no-op apply is the common case of a reconcile loop; validating specs costs more than the rest of it
(pydantic alone takes a fifth of a second to import). The cache keeps, per exact set of file contents,
just what the planner reads. It is only ever used to find that nothing needs doing, and which services a
delete names (with their stop grace periods): any other plan is made again from fully validated specs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path
from types import SimpleNamespace

from . import __version__
from .config import private, private_dir
from .errors import OrchestrError
from .model import RestartPolicy

KEEP = 32  # cached spec sets per state dir
MAX_FILE_BYTES = 8 << 20  # spec.loader.MAX_FILE_BYTES, not imported from there: orchestr.spec loads pydantic


_COMPOSE = re.compile(rb"^services\s*:", re.MULTILINE)
_WORD = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
_COMPOSE_VARIABLES = {"COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES"}


def key(files: list[str], options: str = "") -> str | None:
    """A digest of the files' names and contents and of options; None when a file cannot be cached (stdin) or read.

    What a compose file means also depends on the environment and its .env file, so they count too; one that
    reads env files is not cached."""
    h = hashlib.sha256(__version__.encode() + b"\0" + options.encode())
    for name in files:
        if name == "-":
            return None
        try:
            with open(name, "rb") as f:
                info = os.fstat(f.fileno())
                # only regular files no larger than a spec may be: /dev/zero or a huge file is the loader's to refuse
                if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_BYTES:
                    return None
                data = f.read()
        except OSError:
            return None
        h.update(os.path.abspath(name).encode() + b"\0" + hashlib.sha256(data).digest())
        if _COMPOSE.search(data):
            if b"env_file" in data:
                return None
            # the variables it can read (interpolated, or bare names in environment lists and maps) are words of it
            names = {m.decode() for m in set(_WORD.findall(data))} | _COMPOSE_VARIABLES
            h.update(json.dumps(sorted((n, os.environ[n]) for n in names if n in os.environ)).encode())
            try:
                h.update(Path(os.path.dirname(os.path.abspath(name)), ".env").read_bytes())
            except OSError:
                h.update(b"\0no .env")
    return h.hexdigest()


def lookup(state_dir: Path, digest: str) -> list[SimpleNamespace] | None:
    try:
        raw = json.loads((state_dir / "spec-cache" / f"{digest}.json").read_text())
    except (OSError, ValueError):
        return None
    return [
        SimpleNamespace(
            namespace=s["namespace"], name=s["name"], spec_hash=s["hash"],
            spec=SimpleNamespace(
                replicas=s["replicas"], runtime=s["runtime"], depends_on=tuple(s["dependsOn"]),
                restart_policy=RestartPolicy(s["restartPolicy"]), paused=s["paused"],
                stop_grace_period=s["stopGracePeriod"],
            ),
        )
        for s in raw
    ]


def remember(state_dir: Path, digest: str, services) -> None:
    """Writes the planner's view of services; a failure to write only costs the next apply some time."""
    directory = state_dir / "spec-cache"
    rows = [
        {
            "namespace": s.namespace, "name": s.name, "hash": s.spec_hash, "replicas": s.spec.replicas,
            "runtime": s.spec.runtime, "dependsOn": list(s.spec.depends_on),
            "restartPolicy": str(s.spec.restart_policy), "paused": s.spec.paused,
            "stopGracePeriod": s.spec.stop_grace_period,
        }
        for s in services
    ]
    try:
        private_dir(directory)
        tmp = directory / f".{digest}.tmp"
        with open(tmp, "w", opener=private) as f:
            f.write(json.dumps(rows))
        tmp.rename(directory / f"{digest}.json")
        entries = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for old in entries[:-KEEP]:
            old.unlink(missing_ok=True)
    except (OSError, OrchestrError):
        pass
