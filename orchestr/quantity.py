"""Parsing of the units specs and flags are written in: byte quantities, durations and CPU counts.

A ValueError says what was expected; the caller adds what it got, in its own notation.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

_FACTORS = {
    "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}
_QUANTITY = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")
_SECONDS = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DURATION_PART = r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)"
_DURATION = re.compile(f"(?:{_DURATION_PART})+")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_quantity(value: object) -> int:
    """Bytes from a Kubernetes-style quantity: 64Mi, 1.5Gi, 512k, or a plain number of bytes."""
    if _is_number(value) and math.isfinite(value) and value == int(value) and value >= 0:
        return int(value)
    if isinstance(value, str) and (m := _QUANTITY.fullmatch(value.strip())):
        # Decimal keeps 1.1Gi exact; a fraction of a byte rounds up.
        return math.ceil(Decimal(m[1]) * _FACTORS[m[2] or ""])
    raise ValueError("expected a quantity like 64Mi")


def parse_duration(value: object) -> float:
    """Seconds from a duration: 500ms, 10s, 1m30s, 2h, or a plain number of seconds."""
    if _is_number(value) and math.isfinite(value) and value >= 0:
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            return float(text)
        if _DURATION.fullmatch(text):
            return sum(float(n) * _SECONDS[unit] for n, unit in re.findall(_DURATION_PART, text))
    raise ValueError("expected a duration like 10s, 1m30s or 500ms")


def parse_cpus(value: object) -> float:
    """A number of CPUs from 0.5, 2 or millicpus like 500m; always more than zero."""
    cpus: float | None = None
    if _is_number(value) and math.isfinite(value):
        cpus = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            cpus = float(text)
        elif text.endswith("m") and text[:-1].isdigit():
            cpus = int(text[:-1]) / 1000
    if cpus is None or cpus <= 0:
        raise ValueError("expected a number of CPUs greater than 0, like 0.5 or 500m")
    return cpus
