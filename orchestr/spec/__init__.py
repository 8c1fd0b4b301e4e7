"""Service specs: YAML files in, validated Services out, with every error at its file, line and field.

A file may also be a compose file or hold Kubernetes manifests: they are translated (compose.py, kubernetes.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import SpecError
from .checks import validate_set
from .loader import documents, read
from .models import Service, validate

__all__ = ["Service", "dump", "load", "loads", "validate_set"]


def load(paths: Iterable[str | Path], *, project: str | None = None, profiles: Iterable[str] = (),
         environ: Mapping[str, str] | None = None, warn: Callable[[str], None] | None = None) -> list[Service]:
    """Every Service in the given spec files, checked one by one and as a set; raises SpecError.

    Compose files take their project (the namespace) from project, else as compose does; profiles are the active
    compose profiles; environ the variables compose files interpolate (default os.environ); warn gets a line for
    each key that is ignored."""
    options = {"project": project, "profiles": tuple(profiles), "environ": environ, "warn": warn}
    services: list[Service] = []
    for path in paths:
        text, name, base_dir = read(path)
        found = _parse(text, name, base_dir, options)
        if not found:
            raise SpecError(name, None, "", "the file holds no documents; expected at least one Service")
        services += found
    validate_set(services)
    return services


def loads(text: str, filename: str = "<string>", base_dir: Path | None = None, **options: Any) -> list[Service]:
    """Every Service in spec text; relative bind sources resolve against base_dir (default: cwd). Options as load's."""
    base = Path(os.path.abspath(base_dir)) if base_dir is not None else Path.cwd()
    options.setdefault("profiles", ())
    services = _parse(text, filename, base, options)
    validate_set(services)
    return services


def dump(services: Iterable[Service]) -> str:
    """The orchestr spec documents of services, as YAML that loads back into the same services."""
    import yaml

    docs = []
    for s in services:
        body = s.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        metadata = {"name": s.name, "namespace": s.namespace, **body.get("metadata", {})}
        docs.append({"apiVersion": "orchestr/v1", "kind": "Service", "metadata": metadata, "spec": body["spec"]})
    text: str = yaml.safe_dump_all(docs, sort_keys=False)
    return text


def _parse(text: str, filename: str, base_dir: Path, options: dict[str, Any]) -> list[Service]:
    services: list[Service] = []
    manifests = []
    for data, line, lines in documents(text, filename):
        api = data.get("apiVersion") if isinstance(data, dict) else None
        if isinstance(api, str) and not api.startswith("orchestr"):
            manifests.append((data, line, lines))
            continue
        if api is None and "kind" not in data and "services" in data:
            from . import compose

            services += compose.translate(data, filename, line, lines, base_dir, **options)
            continue
        services.append(validate(data, filename, line, lines, base_dir))
    if manifests:
        from . import kubernetes

        services += kubernetes.translate(manifests, filename, base_dir, options)
    return services
