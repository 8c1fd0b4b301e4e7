"""Where orchestr keeps its state and which runtime it uses when a spec names none."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# The preferred default when neither the spec, --runtime nor ORCHESTR_RUNTIME names one:
# the first of these that some installed plugin provides.
DEFAULT_RUNTIME_PREFERENCE = ("native", "docker")


def default_state_dir() -> Path:
    if env := os.environ.get("ORCHESTR_STATE_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/orchestr")
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "orchestr"


@dataclass(frozen=True, slots=True)
class Config:
    state_dir: Path = field(default_factory=default_state_dir)
    default_runtime: str | None = field(default_factory=lambda: os.environ.get("ORCHESTR_RUNTIME") or None)
    concurrency: int = 8  # actions the executor runs at once
