"""A ContainerSpec and its image's config as an OCI runtime spec (the config.json runc runs), and the process spec
of an exec. Pure functions, no I/O: what they need of the image's files (its /etc/passwd and /etc/group) is given
to them."""

from __future__ import annotations

import copy
import os

from orchestr.containers import argv as resolve_argv
from orchestr.containers import volume_key
from orchestr.errors import TerminalFailure
from orchestr.model import ContainerSpec, Resources, Volume

from .client import RUNTIME

OCI_VERSION = "1.0.2-dev"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CFS_PERIOD = 100_000  # microseconds
# Docker's default capabilities; every other one is dropped from every set, and none is inheritable (CVE-2022-24769).
CAPABILITIES = [f"CAP_{c}" for c in (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP", "SETPCAP",
    "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")]
# runc's masked and read-only paths, as Docker and the native runtime have them.
MASKED = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
          "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"]
READ_ONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
# What Docker's default seccomp profile refuses and the native runtime's filter refuses too (EPERM); clone3 answers
# ENOSYS so the C library falls back to clone, whose flags the filter sees (clone with CLONE_NEWUSER is refused).
REFUSED = sorted([
    "syslog", "uselib", "ustat", "sysfs", "vhangup", "pivot_root", "_sysctl", "acct", "settimeofday", "mount",
    "umount2", "swapon", "swapoff", "reboot", "iopl", "ioperm", "create_module", "init_module", "delete_module",
    "get_kernel_syms", "query_module", "quotactl", "nfsservctl", "lookup_dcookie", "clock_settime", "mbind",
    "set_mempolicy", "get_mempolicy", "kexec_load", "add_key", "request_key", "keyctl", "unshare", "move_pages",
    "perf_event_open", "name_to_handle_at", "open_by_handle_at", "clock_adjtime", "setns", "kcmp", "finit_module",
    "kexec_file_load", "bpf", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "open_tree",
    "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr"])
CLONE_NEWUSER = 0x10000000
EPERM, ENOSYS = 1, 38
# The device nodes a container may use (runc creates them; the cgroup allows them and nothing else).
DEVICES = [("c", 1, 3), ("c", 1, 5), ("c", 1, 7), ("c", 1, 8), ("c", 1, 9), ("c", 5, 0), ("c", 5, 1), ("c", 5, 2),
           ("c", 136, -1)]
NOFILE = 1048576


def runtime_spec(spec: ContainerSpec, image: dict, *, id: str, user: tuple[int, int, list[int]], files: dict[str, str],
                 netns: str | None, cgroups_path: str, volumes_dir: str, nofile: int = NOFILE) -> dict:
    """The OCI runtime spec of container id: spec (its volumes checked by orchestr.containers.volumes) over image
    (the "config" object of the image's config), running as user (uid, gid, groups). files maps paths in the
    container (/etc/hosts, /etc/resolv.conf, /etc/hostname) to host files bound there; netns is the network
    namespace to join (None: a new one; "host": the host's)."""
    uid, gid, groups = user
    process = {
        "terminal": spec.tty,
        "user": {"uid": uid, "gid": gid, "additionalGids": groups},
        "args": resolve_argv(spec, image.get("Entrypoint"), image.get("Cmd")),
        "env": environment(spec, image),
        "cwd": spec.working_dir or image.get("WorkingDir") or "/",
        "capabilities": {s: list(CAPABILITIES) for s in ("bounding", "effective", "permitted")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
        "noNewPrivileges": True,
        "oomScoreAdj": 0,
    }
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if netns != "host":
        namespaces.append({"type": "network", **({"path": netns} if netns else {})})
    linux = {
        "namespaces": namespaces,
        "resources": resources(spec.resources),
        "cgroupsPath": cgroups_path,
        "maskedPaths": list(MASKED),
        "readonlyPaths": list(READ_ONLY),
    }
    if spec.seccomp != "unconfined" and os.uname().machine == "x86_64":
        linux["seccomp"] = seccomp()
    return {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": "rootfs", "readonly": spec.read_only},
        "hostname": spec.name if netns != "host" else os.uname().nodename,
        "mounts": [*base_mounts(), *[mount(spec, v, volumes_dir) for v in spec.volumes],
                   *[{"destination": target, "type": "bind", "source": source,
                      "options": ["rbind", "rprivate", "nosuid", "nodev", "noexec"]}
                     for target, source in sorted(files.items())]],
        "linux": linux,
        "annotations": {"io.orchestr.container": id},
    }


def environment(spec: ContainerSpec, image: dict) -> list[str]:
    env = {"PATH": DEFAULT_PATH}
    for item in image.get("Env") or []:
        key, _, value = item.partition("=")
        env[key] = value
    env.update(spec.env)
    env["HOSTNAME"] = spec.name
    return [f"{k}={v}" for k, v in env.items()]


def base_mounts() -> list[dict]:
    """/proc, /dev and its pts, shm and mqueue, a read-only /sys and its cgroups, as runc's default spec has them."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755",
                                                                               "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev",
                                                                                 "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["ro", "nosuid", "noexec", "nodev"]},
    ]


def mount(spec: ContainerSpec, v: Volume, volumes_dir: str) -> dict:
    """The mount of a checked volume: binds and named volumes (a directory of volumes_dir per namespace and name)
    recursively bound with nodev, a tmpfs of its size."""
    if v.target == "/proc" or v.target.startswith("/proc/"):
        raise TerminalFailure(f"container {spec.name}: volume {v.target!r}: nothing may be mounted over or inside "
                              "/proc", runtime=RUNTIME, container=spec.name)
    if v.type == "tmpfs":
        options = ["nosuid", "nodev", f"size={v.tmpfs_size}", "mode=1777"]
        return {"destination": v.target, "type": "tmpfs", "source": "tmpfs",
                "options": [*options, *(["ro"] if v.read_only else [])]}
    source = os.path.join(volumes_dir, volume_key(spec.namespace, v.source or "")) if v.type == "volume" else v.source
    options = ["rbind", "rprivate", "nodev", "ro" if v.read_only else "rw"]
    return {"destination": v.target, "type": "bind", "source": source, "options": options}


def resources(limits: Resources) -> dict:
    """linux.resources: every device but the standard nodes refused, and the limits (memory caps swap too)."""
    devices = [{"allow": False, "access": "rwm"}]
    devices += [{"allow": True, "type": t, "major": major, **({"minor": minor} if minor >= 0 else {}),
                 "access": "rwm"} for t, major, minor in DEVICES]
    out: dict = {"devices": devices}
    if limits.memory is not None:
        out["memory"] = {"limit": limits.memory, "swap": limits.memory}
    if limits.cpus is not None:
        out["cpu"] = {"quota": round(limits.cpus * CFS_PERIOD), "period": CFS_PERIOD}
    if limits.pids is not None:
        out["pids"] = {"limit": limits.pids}
    return out


def seccomp() -> dict:
    """The native runtime's filter as an OCI seccomp section: everything allowed but what Docker's profile refuses;
    other ABIs (i386, x32) fail, as their numbers would slip past the names."""
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": REFUSED, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
            {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
             "args": [{"index": 0, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ"}]},
        ],
    }


def exec_process(container_spec: dict, argv: list[str], *, env: dict[str, str] | None,
                 user: tuple[int, int, list[int]] | None, workdir: str | None, tty: bool = False) -> dict:
    """An exec's process spec: the container's process with argv, env added, and user and workdir when given."""
    process = copy.deepcopy(container_spec["process"])
    process["args"] = list(argv)
    process["terminal"] = tty
    if env:
        merged = dict(item.partition("=")[::2] for item in process.get("env") or [])
        merged.update(env)
        process["env"] = [f"{k}={v}" for k, v in merged.items()]
    if user is not None:
        process["user"] = {"uid": user[0], "gid": user[1], "additionalGids": user[2]}
    if workdir:
        process["cwd"] = workdir
    return process


def _entries(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.split("\n") if line.strip() and not line.startswith("#")]


def lookup_user(user: str | None, passwd: str, group: str) -> tuple[int, int, list[int]]:
    """(uid, gid, groups) of a user spec (name, uid, name:group, uid:gid) in the image's passwd and group files."""
    name, _, group_name = (user or "0").partition(":")
    users = [e for e in _entries(passwd) if len(e) >= 7]
    entry = next((e for e in users if e[0] == name), None)
    if entry is None and name.isdigit():
        entry = next((e for e in users if e[2] == name), None)
    try:
        if entry is not None:
            login, uid, gid = entry[0], int(entry[2]), int(entry[3])
        elif name.isdigit():
            login, uid, gid = None, int(name), 0
        else:
            raise LookupError(f"unable to find user {name}: no matching entries in passwd file")
        groups = [e for e in _entries(group) if len(e) >= 3]
        if group_name:
            found = next((e for e in groups if e[0] == group_name), None)
            if found is not None:
                gid = int(found[2])
            elif group_name.isdigit():
                gid = int(group_name)
            else:
                raise LookupError(f"unable to find group {group_name}: no matching entries in group file")
        extra = {int(e[2]) for e in groups if login and len(e) > 3 and login in e[3].split(",") and e[2].isdigit()}
    except ValueError:
        raise LookupError(f"user {user!r}: the image's passwd or group file has an entry that is not a number") \
            from None
    return uid, gid, sorted(extra | {gid})
