"""Registry credentials from a Docker-format config file, and parsing WWW-Authenticate challenges."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from pathlib import Path

from orchestr.errors import RuntimeFailure

_DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")
_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]*))')


def config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return Path(base) / "config.json"


def _host_of(key: str) -> str:
    key = key.split("://", 1)[-1]
    return key.split("/", 1)[0]


def credentials(registry: str) -> tuple[str, str] | None:
    """(user, password) for registry (host[:port]) from the Docker config file, or None."""
    path = config_path()
    try:
        auths = json.loads(path.read_text()).get("auths") or {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RuntimeFailure(f"{path}: cannot read registry credentials: {e}") from None
    wanted = _DOCKER_HUB_KEYS if registry == "docker.io" else (registry,)
    for key, entry in auths.items():
        if _host_of(key) not in wanted and key not in wanted:
            continue
        if entry.get("username") and entry.get("password"):
            return entry["username"], entry["password"]
        if entry.get("auth"):
            try:
                user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                sep = ""
            if not sep:
                raise RuntimeFailure(f"{path}: auths[{key!r}].auth is not base64 of user:password")
            return user, password
    return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """('bearer' | 'basic' | ..., params) from a WWW-Authenticate header."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                            for m in _PARAM.finditer(rest)}
