"""An orchestr Service document made from another format's (compose, Kubernetes), with the key every field came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .loader import Lines
from .models import API_VERSION, KIND, Service, validate


class Translated:
    """The document being made; errors orchestr's validation finds name the source's key and line."""

    def __init__(self, file: str, source: Lines, base_dir: Path, root: str, namespace: str, name: str,
                 prefix: str) -> None:
        self.file, self.source, self.base_dir, self.root, self.prefix = file, source, base_dir, root, prefix
        self.spec: dict[str, Any] = {}
        self.metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        self.data = {"apiVersion": API_VERSION, "kind": KIND, "metadata": self.metadata, "spec": self.spec}
        self.origin: dict[str, str] = {}
        self.lines = Lines()
        self.first = source.find(root, 0, key=True)
        for path in ("", "metadata", "metadata.name"):
            self.origin[path], self.lines.values[path] = root, self.first

    def note(self, path: str, key: str | None) -> None:
        """The field at path came from key (a path below prefix in the source; None: the root)."""
        source = f"{self.prefix}{key}" if key else self.root
        self.origin[path] = source
        self.lines.values[path] = self.source.find(source, self.first)

    def put(self, field: str, value: Any, key: str | None) -> None:
        target = self.spec
        *parents, last = field.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
        self.note(f"spec.{field}", key)

    def meta(self, field: str, value: Any, key: str | None) -> None:
        self.metadata[field] = value
        self.note(f"metadata.{field}", key)

    def append(self, field: str, value: Any, key: str | None) -> None:
        if field not in self.spec:  # the list's own errors are at its first item
            self.note(f"spec.{field}", key)
        items = self.spec.setdefault(field, [])
        items.append(value)
        self.note(f"spec.{field}[{len(items) - 1}]", key)

    def validate(self) -> Service:
        return validate(self.data, self.file, self.first, self.lines, self.base_dir, self.origin)
