"""Where orchestr keeps its state and which runtime it uses when a spec names none."""

from __future__ import annotations

import os
import stat
from dataclasses import field
from pathlib import Path

from .errors import OrchestrError
from .plain import Frozen, record

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


def private_dir(path: Path) -> Path:
    """path as a directory only its owner may enter (0700); missing parents are made so too.

    The state dir holds image layers (setuid binaries among them), containers' root filesystems, volumes and
    specs with their secrets: one any local user could enter would give them all of it. So a looser directory
    (an older orchestr's 0755) is tightened, as dockerd does with its root at each start; one owned by another
    user is refused, since its owner could loosen it again or swap what is inside."""
    path = Path(path)
    try:
        for _ in range(2):
            try:
                os.mkdir(path, 0o700)
                return path
            except FileNotFoundError:
                private_dir(path.parent)
            except FileExistsError:
                break
        st = os.stat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise OrchestrError(f"{path}: not a directory; orchestr keeps its state in a directory")
        if st.st_uid != os.geteuid():
            raise OrchestrError(f"{path}: owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}); "
                                "orchestr keeps its state only in a directory of its own: chown it or use another")
        if st.st_mode & 0o7077:
            os.chmod(path, 0o700)
    except OSError as e:
        raise OrchestrError(f"{path}: cannot make it a directory of its owner's only: {e.strerror}") from None
    return path


def private(path: str | os.PathLike, flags: int) -> int:
    """An opener for open(): files orchestr makes for itself are its owner's only (0600), whatever the umask."""
    return os.open(path, flags | os.O_CLOEXEC, 0o600)


@record
class Config(Frozen):
    """Settings shared by orchestr and its runtimes, from the environment unless given."""

    state_dir: Path = field(default_factory=default_state_dir)
    default_runtime: str | None = field(default_factory=lambda: os.environ.get("ORCHESTR_RUNTIME") or None)
    concurrency: int = 8  # actions the executor runs at once
