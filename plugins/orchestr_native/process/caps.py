"""Capabilities: Docker's default set is kept, every other one is dropped from all sets; none is inheritable."""

from __future__ import annotations

from . import linux

CAPS = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
    "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10, "NET_BROADCAST": 11,
    "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15, "SYS_MODULE": 16, "SYS_RAWIO": 17,
    "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20, "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23,
    "SYS_RESOURCE": 24, "SYS_TIME": 25, "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29,
    "AUDIT_CONTROL": 30, "SETFCAP": 31,
}
DEFAULT = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
    "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)


def mask(names=DEFAULT) -> int:
    bits = 0
    for name in names:
        bits |= 1 << CAPS[name]
    return bits


def _last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


LAST_CAP = _last_cap()  # read once in the supervisor, not in every container's init


def drop_bounding(keep: int) -> None:
    """Removes every capability outside keep from the bounding set; must run before the uid changes."""
    for cap in range(LAST_CAP + 1):
        if not keep >> cap & 1:
            linux.prctl(linux.PR_CAPBSET_DROP, cap)
    linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL)


def limit(keep: int) -> None:
    """Sets effective and permitted to keep (the bounding set is already cut down) and clears inheritable: an
    inheritable capability would pass to any program with the same file capability (CVE-2022-24769)."""
    linux.capset(keep, keep, 0)
