"""Resolves a user spec (name, uid, name:group, uid:gid) against the container's /etc/passwd and /etc/group."""

from __future__ import annotations


def _entries(path: str) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        return []


def lookup(spec: str | None) -> tuple[int, int, list[int], str]:
    """(uid, gid, supplementary gids, home) for spec; reads /etc of the current root."""
    name, _, group = (spec or "0").partition(":")
    passwd = [e for e in _entries("/etc/passwd") if len(e) >= 7]
    entry = next((e for e in passwd if e[0] == name), None)
    if entry is None and name.isdigit():
        entry = next((e for e in passwd if e[2] == name), None)
    if entry is not None:
        user, uid, gid, home = entry[0], int(entry[2]), int(entry[3]), entry[5] or "/"
    elif name.isdigit():
        user, uid, gid, home = None, int(name), 0, "/"
    else:
        raise LookupError(f"unable to find user {name}: no matching entries in passwd file")
    groups = [e for e in _entries("/etc/group") if len(e) >= 3]
    if group:
        found = next((e for e in groups if e[0] == group), None)
        if found is not None:
            gid = int(found[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise LookupError(f"unable to find group {group}: no matching entries in group file")
    extra = {int(e[2]) for e in groups if user and len(e) > 3 and user in e[3].split(",")}
    return uid, gid, sorted(extra | {gid}), home
