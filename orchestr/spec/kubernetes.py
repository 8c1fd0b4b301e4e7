"""Kubernetes manifests to Services."""

from __future__ import annotations

from typing import Any

from ..errors import SpecError


def translate(manifests: list[Any], filename: str, base_dir: Any, options: dict[str, Any]) -> list[Any]:
    data, line, lines = manifests[0]
    raise SpecError(filename, line, "apiVersion", f"expected orchestr/v1, got {data['apiVersion']!r}")
