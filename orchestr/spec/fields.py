"""The field types of a spec: what each field accepts, checked by pydantic validators with orchestr's messages."""

from __future__ import annotations

import functools
import ipaddress
import os
import posixpath
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, StrictInt

from ..model import LABEL_PREFIX
from ..quantity import parse_cpus, parse_duration, parse_quantity
from .messages import fail, show, show_bytes

# Smaller limits start no process: Docker refuses memory under 6 MiB, and the CFS quota under 1 ms per 100 ms.
MIN_MEMORY = 6 << 20
MIN_CPUS = 0.01

DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
DNS_WORDS = "lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit"
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?::[A-Za-z0-9_][A-Za-z0-9_.-]*)?")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_IMAGE = re.compile(
    rf"(?:{_HOST}(?:\.{_HOST})*(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)


def _dns_label(value: str) -> str:
    if not DNS_LABEL.fullmatch(value):
        fail(f"expected a DNS label ({DNS_WORDS}), got {show(value)}")
    return value


def _string_map(value: Any) -> dict[str, str]:
    """env and labels: names to strings; numbers become strings, as compose does."""
    if not isinstance(value, dict):
        fail(f"expected a mapping of names to strings, got {show(value)}")
    out = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key or "=" in key:
            fail(f"expected a name without '=', got {show(key)}", str(key))
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            fail(f"expected a string or a number, got {show(item)}", key)
        out[key] = item if isinstance(item, str) else str(item)
    return dict(sorted(out.items()))  # sorted, so the spec hash ignores key order


def _labels(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if key.startswith(LABEL_PREFIX):
            fail(f"label names starting with '{LABEL_PREFIX}' are reserved for orchestr, got {show(key)}", key)
    return value


def _argv(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        fail(f"expected a non-empty list of strings, got {show(value)}")
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            fail(f"expected a string, got {show(item)}", i)
    return tuple(item if isinstance(item, str) else str(item) for item in value)


def _image(value: str) -> str:
    if not _IMAGE.fullmatch(value):
        fail(f"expected an image reference like busybox:latest, got {show(value)}")
    return value


def _user(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and _USER.fullmatch(value):
        return value
    if value is None:
        return None
    fail(f"expected a user like 1000, 1000:1000 or www-data, got {show(value)}")


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        fail(f"expected an absolute path, got {show(value)}")
    return value


def normpath(path: str) -> str:
    return "/" + posixpath.normpath(path).lstrip("/")  # normpath keeps a leading '//'


def _target(value: str) -> str:
    if not value.startswith("/") or ".." in value.split("/"):
        fail(f"expected an absolute path without '..', got {show(value)}")
    path = normpath(value)
    if path == "/":
        fail("mounting over the container's root is not allowed")
    return path


def _unit(parse, positive: bool = False):
    """A before-validator from a quantity.py parser; None passes for optional fields."""

    def check(value: Any) -> Any:
        if value is None:
            return None
        try:
            result = parse(value)
        except ValueError as e:
            fail(f"{e}, got {show(value)}")
        if positive and result <= 0:
            fail(f"expected a quantity greater than 0, got {show(value)}")
        return result

    return BeforeValidator(check)


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        fail(f"expected a port number from 1 to 65535, got {value}")
    return value


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        fail(f"expected an IP address like 127.0.0.1, got {show(value)}")


def _positive_seconds(value: float) -> float:
    if value <= 0:
        fail(f"expected a duration greater than 0, like 10s or 500ms, got {value:g}s")
    return value


def _statuses(value: Any) -> tuple[int, int]:
    """An HTTP status (200) or an inclusive range of them ("200-399")."""
    low = high = None
    if isinstance(value, int) and not isinstance(value, bool):
        low = high = value
    elif isinstance(value, str) and re.fullmatch(r"\d{3}\s*-\s*\d{3}", value.strip()):
        low, high = (int(part) for part in value.split("-"))
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        low, high = value
    if low is None or high is None or not 100 <= low <= high <= 599:
        fail(f"expected an HTTP status like 200 or a range like 200-399, got {show(value)}")
    return (low, high)


def _http_path(value: str) -> str:
    if not value.startswith("/") or not value.isprintable() or " " in value:
        fail(f"expected a path starting with '/', without spaces, got {show(value)}")
    return value


@functools.cache
def _host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@functools.cache
def _host_cpus() -> int:
    return os.cpu_count() or 1


def _cpus_in_range(value: float | None) -> float | None:
    # The host that applies the spec runs its containers: Docker refuses more CPUs than it has, too.
    host = _host_cpus()
    if value is not None and not MIN_CPUS <= value <= host:
        if value < MIN_CPUS:
            fail(f"expected at least {MIN_CPUS:g} CPUs (10m), the least a process can be given, got {value:g}")
        fail(f"expected at most {host} CPUs, as many as this host has, got {value:g}")
    return value


def _memory_in_range(value: int | None) -> int | None:
    if value is not None and value < MIN_MEMORY:
        fail(f"expected at least {show_bytes(MIN_MEMORY)}, too little memory for a process to start, "
             f"got {show_bytes(value)}")
    if value is not None and value > _host_memory():
        fail(f"expected at most {show_bytes(_host_memory())}, the memory of this host, got {show_bytes(value)}")
    return value


DnsLabel = Annotated[str, AfterValidator(_dns_label)]
StringMap = Annotated[dict[str, str], BeforeValidator(_string_map)]
Labels = Annotated[StringMap, AfterValidator(_labels)]
Argv = Annotated[tuple[str, ...] | None, BeforeValidator(_argv)]
ImageReference = Annotated[str, AfterValidator(_image)]
AbsolutePath = Annotated[str, AfterValidator(_absolute)]
User = Annotated[str | None, BeforeValidator(_user)]
MountTarget = Annotated[str, AfterValidator(_target)]  # normalised; never the container's /
PortNumber = Annotated[StrictInt, AfterValidator(_port)]
IPAddress = Annotated[str, AfterValidator(_ip)]
Cpus = Annotated[float | None, _unit(parse_cpus), AfterValidator(_cpus_in_range)]
Memory = Annotated[int | None, _unit(parse_quantity, positive=True), AfterValidator(_memory_in_range)]  # bytes
Size = Annotated[int | None, _unit(parse_quantity, positive=True)]  # bytes
Duration = Annotated[float, _unit(parse_duration)]  # seconds
PositiveDuration = Annotated[float, _unit(parse_duration), AfterValidator(_positive_seconds)]  # seconds
Statuses = Annotated[tuple[int, int], BeforeValidator(_statuses)]  # inclusive
HttpPath = Annotated[str, AfterValidator(_http_path)]


def _count_or_percent(value: Any) -> int | str:
    """maxSurge and maxUnavailable: a count of replicas, or a percentage of them ("25%")."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,3}%", value) and int(value[:-1]) <= 100:
        return value
    fail(f"expected a count of replicas (0 or more) or a percentage like 25%, got {show(value)}")
    raise AssertionError  # fail raises


CountOrPercent = Annotated[int | str, BeforeValidator(_count_or_percent)]
