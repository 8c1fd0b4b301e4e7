"""The default seccomp filter: the system calls Docker's default profile refuses, refused here too.

Docker's profile lists what is allowed; this filter lists what is refused (EPERM), which comes to the same
for the calls that matter to a container: kernel modules, kexec, reboot, clocks, swap, quotas, keyrings,
bpf, perf, userfaultfd, io_uring, mounting (old and new API), namespaces (unshare, setns, and clone with
CLONE_NEWUSER), handles to host files, NUMA policies. Most are already out of reach without the
capabilities the container lacks; the filter closes them for good, whatever the kernel's checks. clone3
answers ENOSYS, as in Docker, so the C library falls back to clone, whose flags the filter can see. Other
ABIs on the same kernel (i386, x32) are refused whole: their numbers differ and would slip past the list.

Written for x86_64; on other architectures containers run without a filter (the README says so).
"""

from __future__ import annotations

import ctypes
import errno
import os

from . import linux

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
CLONE_NEWUSER = 0x10000000
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000

# BPF instruction classes and modes (linux/bpf_common.h)
LD_W_ABS = 0x20
JEQ, JGE, JSET = 0x15, 0x35, 0x45
RET = 0x06

# offsets in struct seccomp_data
NR, ARCH, ARG0 = 0, 4, 16

REFUSED_X86_64 = {
    "syslog": 103, "uselib": 134, "ustat": 136, "sysfs": 139, "vhangup": 153, "pivot_root": 155, "_sysctl": 156,
    "acct": 163, "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169,
    "iopl": 172, "ioperm": 173, "create_module": 174, "init_module": 175, "delete_module": 176,
    "get_kernel_syms": 177, "query_module": 178, "quotactl": 179, "nfsservctl": 180, "lookup_dcookie": 212,
    "clock_settime": 227, "mbind": 237, "set_mempolicy": 238, "get_mempolicy": 239, "kexec_load": 246,
    "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272, "move_pages": 279, "perf_event_open": 298,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308, "kcmp": 312,
    "finit_module": 313, "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425,
    "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
}
CLONE, CLONE3 = 56, 435


class _Instruction(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Instruction))]


SUPPORTED = os.uname().machine == "x86_64"


def program() -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions. Jumps go to the shared returns at the end."""
    refused = sorted(set(REFUSED_X86_64.values()))
    body: list[tuple[int, str | int, str | int, int]] = [
        (LD_W_ABS, 0, 0, ARCH),
        (JEQ, 0, "other-abi", AUDIT_ARCH_X86_64),
        (LD_W_ABS, 0, 0, NR),
        (JGE, "other-abi", 0, X32_SYSCALL_BIT),
        (JEQ, "clone", 0, CLONE),
        (JEQ, "enosys", 0, CLONE3),
        *((JEQ, "eperm", 0, nr) for nr in refused),
        (RET, 0, 0, RET_ALLOW),
    ]
    labels = {"clone": len(body)}
    body += [
        (LD_W_ABS, 0, 0, ARG0),  # the low half of clone's flags, where CLONE_NEWUSER is
        (JSET, "eperm", 0, CLONE_NEWUSER),
        (RET, 0, 0, RET_ALLOW),
    ]
    labels["eperm"] = len(body)
    body.append((RET, 0, 0, RET_ERRNO | errno.EPERM))
    labels["enosys"] = labels["other-abi"] = len(body)
    body.append((RET, 0, 0, RET_ERRNO | errno.ENOSYS))
    out = []
    for i, (code, jt, jf, k) in enumerate(body):
        # a jump's offsets count the instructions skipped after it
        jt = labels[jt] - i - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - i - 1 if isinstance(jf, str) else jf
        assert 0 <= jt < 256 and 0 <= jf < 256
        out.append((code, jt, jf, k))
    return out


def _compiled() -> _Program:
    instructions = program()
    array = (_Instruction * len(instructions))(*(_Instruction(*i) for i in instructions))
    return _Program(len(instructions), array)


# built once in the supervisor: each container's init, forked from it, only hands it to the kernel
_PROGRAM = _compiled() if SUPPORTED else None


def install() -> None:
    """Applies the filter to this thread and whatever it execs; needs no_new_privs set first."""
    linux.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(_PROGRAM))
