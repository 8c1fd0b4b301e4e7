"""Image references (`name[:tag][@digest]`), parsed and normalised the way Docker does."""

from __future__ import annotations

import re

from orchestr.errors import TerminalFailure
from orchestr.plain import Frozen, record

DEFAULT_REGISTRY = "docker.io"
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HOST = re.compile(r"(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?")


@record
class Reference(Frozen):
    """An image reference, normalised: registry, repository, and a tag or a digest."""

    registry: str  # host[:port], docker.io for Docker Hub
    repository: str  # path inside the registry, library/busybox for official images
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        if self.digest:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag}"

    @property
    def tagged(self) -> str | None:
        """name:tag, when the reference has a tag."""
        return f"{self.name}:{self.tag}" if self.tag else None

    def with_digest(self, digest: str) -> str:
        return f"{self.name}@{digest}"

    @property
    def api_reference(self) -> str:
        """What the registry's manifest endpoint takes: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"


def parse(ref: str) -> Reference:
    """Normalise ref: `busybox` is docker.io/library/busybox:latest; a digest without a tag keeps no tag."""
    text = ref.strip()
    rest, digest = text, None
    if "@" in text:
        rest, digest = text.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise TerminalFailure(f"invalid image reference {ref!r}: expected a sha256:<64 hex> digest after '@'")
    tag = None
    head, _, last = rest.rpartition("/")
    if ":" in last:
        last, tag = last.split(":", 1)
        if not _TAG.fullmatch(tag):
            raise TerminalFailure(f"invalid image reference {ref!r}: bad tag {tag!r}")
    rest = f"{head}/{last}" if head else last
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        registry, path = first, remainder
        if not _HOST.fullmatch(registry):
            raise TerminalFailure(f"invalid image reference {ref!r}: bad registry host {registry!r}")
    else:
        registry, path = DEFAULT_REGISTRY, rest
    if registry == "index.docker.io":
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    if not path or not all(_COMPONENT.fullmatch(c) for c in path.split("/")):
        raise TerminalFailure(
            f"invalid image reference {ref!r}: a name is lowercase letters, digits and separators (. _ - /)"
        )
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, path, tag, digest)


def familiar(full: str) -> str:
    """The short form Docker prints: docker.io/library/busybox:latest is busybox:latest."""
    for prefix in (f"{DEFAULT_REGISTRY}/library/", f"{DEFAULT_REGISTRY}/"):
        if full.startswith(prefix):
            return full[len(prefix):]
    return full
