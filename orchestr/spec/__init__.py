"""Service specs: YAML files in, validated Services out, with every error at its file, line and field."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import SpecError
from .checks import validate_set
from .loader import documents, read
from .models import Service, validate

__all__ = ["Service", "load", "loads", "validate_set"]


def load(paths: Iterable[str | Path]) -> list[Service]:
    """Every Service in the given spec files, checked one by one and as a set; raises SpecError."""
    services: list[Service] = []
    for path in paths:
        text, name, base_dir = read(path)
        found = _parse(text, name, base_dir)
        if not found:
            raise SpecError(name, None, "", "the file holds no documents; expected at least one Service")
        services += found
    validate_set(services)
    return services


def loads(text: str, filename: str = "<string>", base_dir: Path | None = None) -> list[Service]:
    """Every Service in spec text; relative bind sources resolve against base_dir (default: cwd)."""
    base = Path(os.path.abspath(base_dir)) if base_dir is not None else Path.cwd()
    services = _parse(text, filename, base)
    validate_set(services)
    return services


def _parse(text: str, filename: str, base_dir: Path) -> list[Service]:
    return [validate(data, filename, line, lines, base_dir) for data, line, lines in documents(text, filename)]
