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
    """(user, password) for registry (host[:port]) from the Docker config file, or None.

    As the docker CLI does: a credential helper named for the registry in credHelpers, else the one in
    credsStore, else the auths entries of the file itself."""
    path = config_path()
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RuntimeFailure(f"{path}: cannot read registry credentials: {e}") from None
    wanted = _DOCKER_HUB_KEYS if registry == "docker.io" else (registry,)
    helpers = config.get("credHelpers") or {}
    helper = next((h for key, h in helpers.items() if key in wanted or _host_of(key) in wanted), None)
    if helper or config.get("credsStore"):
        server = _DOCKER_HUB_KEYS[0] if registry == "docker.io" else registry
        return _from_helper(str(helper or config["credsStore"]), server, path)
    for key, entry in (config.get("auths") or {}).items():
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


def _from_helper(helper: str, server: str, path: Path) -> tuple[str, str] | None:
    """Asks docker-credential-<helper> for server's credentials (the helpers' `get` protocol); None when it
    has none."""
    import subprocess  # only configs that name a helper need it

    program = f"docker-credential-{helper}"
    try:
        done = subprocess.run([program, "get"], input=server.encode(), capture_output=True, timeout=60)
    except FileNotFoundError:
        raise RuntimeFailure(f"{path} names the credential helper {helper!r}, but {program} is not on PATH") from None
    except subprocess.TimeoutExpired:
        raise RuntimeFailure(f"the credential helper {program} did not answer within 60 s") from None
    out = done.stdout.decode(errors="replace").strip()
    if done.returncode != 0:
        if "credentials not found" in out.lower():
            return None
        why = (out or done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}").splitlines()[-1]
        raise RuntimeFailure(f"the credential helper {program} failed for {server}: {why}")
    try:
        answer = json.loads(out)
        user, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError):
        raise RuntimeFailure(f"the credential helper {program} answered something other than its JSON") from None
    if user == "<token>":
        raise RuntimeFailure(f"the credential helper {program} holds an identity token for {server}; "
                             "only a user name and password are supported")
    return str(user), str(secret)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """('bearer' | 'basic' | ..., params) from a WWW-Authenticate header."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                            for m in _PARAM.finditer(rest)}
