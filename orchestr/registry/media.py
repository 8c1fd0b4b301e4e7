"""OCI image-spec and Docker schema 2 media types, and telling manifests from indexes."""

from __future__ import annotations

from orchestr.errors import TerminalFailure

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join(MANIFESTS + INDEXES)


def kind(doc: dict, declared: str | None, what: str) -> str:
    """'manifest' or 'index' for a parsed manifest document; what names it in errors."""
    media_type = doc.get("mediaType") or (declared or "").split(";")[0].strip()
    if media_type in INDEXES or (not media_type and "manifests" in doc):
        return "index"
    if media_type in MANIFESTS or (not media_type and "layers" in doc and "config" in doc):
        if not isinstance(doc.get("config"), dict) or not isinstance(doc.get("layers"), list):
            raise TerminalFailure(f"{what}: manifest has no config or layers")
        return "manifest"
    if doc.get("schemaVersion") == 1:
        raise TerminalFailure(f"{what}: Docker schema 1 manifests are not supported (push it again with a newer tool)")
    raise TerminalFailure(f"{what}: unsupported manifest media type {media_type or '(none)'!r}")
