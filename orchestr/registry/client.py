"""A client of the OCI distribution API (v2) for one repository: manifests and blobs, verified, with auth."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import anyio

from orchestr.errors import NotFound, RuntimeFailure

from . import auth, media

if TYPE_CHECKING:
    import aiohttp


class BlobWriter(Protocol):
    """Where a blob goes as it arrives: a runtime's store, which verifies the digest when it commits."""

    size: int  # bytes written so far

    def reset(self) -> None:
        """Forget what was written: the download starts again."""

    def write(self, data: bytes) -> None:
        """Append data."""

ATTEMPTS = 4  # per request, on connection errors and 5xx answers
MAX_MANIFEST = 4 << 20
CHUNK = 1 << 20
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}


def insecure(registry: str) -> bool:
    """Plain HTTP only for loopback hosts and ORCHESTR_INSECURE_REGISTRIES (comma-separated host:port)."""
    host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
    listed = {r.strip() for r in os.environ.get("ORCHESTR_INSECURE_REGISTRIES", "").split(",") if r.strip()}
    return host in _LOOPBACK or registry in listed


class RegistryClient:
    """Use as `async with RegistryClient(registry, repository) as client:`."""

    def __init__(self, registry: str, repository: str) -> None:
        self.registry, self.repository = registry, repository
        host = "registry-1.docker.io" if registry == "docker.io" else registry
        self.base = f"{'http' if insecure(registry) else 'https'}://{host}/v2/{repository}"
        self._credentials = auth.credentials(registry)
        self._withheld = False  # the credentials were kept from the token server last asked
        self._authorization: str | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RegistryClient:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
        self._session = aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=8))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session:
            await self._session.close()

    # -- public ------------------------------------------------------------------------
    async def manifest(self, reference: str) -> tuple[bytes, str]:
        """(raw bytes, content type) of a manifest or index, its digest checked."""
        what = f"{self.registry}/{self.repository}:{reference}"

        async def read(resp: aiohttp.ClientResponse) -> tuple[bytes, str]:
            raw = await resp.content.read(MAX_MANIFEST + 1)
            if len(raw) > MAX_MANIFEST:
                raise RuntimeFailure(f"{what}: manifest larger than {MAX_MANIFEST} bytes; refused")
            got = f"sha256:{hashlib.sha256(raw).hexdigest()}"
            expected = reference if reference.startswith("sha256:") else resp.headers.get("Docker-Content-Digest")
            if expected and expected != got:
                raise RuntimeFailure(f"{what}: manifest content is {got}, expected {expected}; refused")
            return raw, resp.headers.get("Content-Type", "")

        return await self._request(f"{self.base}/manifests/{reference}", {"Accept": media.ACCEPT}, what, read)

    async def blob(
        self, digest: str, writer: BlobWriter, size: int | None = None, progress: Callable[[int], None] | None = None
    ) -> None:
        """Stream a blob into writer (which verifies the digest on commit); progress gets bytes so far."""
        what = f"{self.registry}/{self.repository}@{digest}"

        async def read(resp: aiohttp.ClientResponse) -> None:
            writer.reset()
            reported = 0
            async for chunk in resp.content.iter_chunked(CHUNK):
                writer.write(chunk)
                if size is not None and writer.size > size:
                    raise RuntimeFailure(f"{what}: blob is larger than the {size} bytes its descriptor says; refused")
                if progress and writer.size - reported >= CHUNK:
                    reported = writer.size
                    progress(reported)
            if progress:
                progress(writer.size)

        await self._request(f"{self.base}/blobs/{digest}", {}, what, read)

    # -- requests, retries and auth -------------------------------------------------------
    async def _request(self, url: str, headers: dict[str, str], what: str, read: Callable[[Any], Any]) -> Any:
        import aiohttp

        assert self._session is not None, "use RegistryClient as an async context manager"
        authorized_with: str | None = None
        attempt = 0
        while True:
            sent = dict(headers)
            if self._authorization:
                sent["Authorization"] = self._authorization
            try:
                async with self._session.get(url, headers=sent) as resp:
                    if resp.status == 401:
                        if authorized_with is not None and authorized_with == self._authorization:
                            raise RuntimeFailure(f"{what}: registry {self.registry} refused {self._who()} (401)")
                        await self._authorize(resp.headers.get("WWW-Authenticate", ""), what)
                        authorized_with = self._authorization
                        continue
                    if resp.status == 403:
                        raise RuntimeFailure(f"{what}: registry {self.registry} denied access to {self._who()} (403)")
                    if resp.status == 404:
                        raise NotFound(f"{what}: not found in registry {self.registry}")
                    if resp.status >= 500 and attempt + 1 < ATTEMPTS:
                        raise _Retry(f"HTTP {resp.status}")
                    if resp.status != 200:
                        body = (await resp.content.read(300)).decode(errors="replace").strip()
                        raise RuntimeFailure(f"{what}: registry {self.registry} answered {resp.status}: {body}")
                    return await read(resp)
            except (_Retry, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as e:
                attempt += 1
                if attempt >= ATTEMPTS:
                    raise RuntimeFailure(f"{what}: registry {self.registry} failed {ATTEMPTS} times: {e}") from None
                await anyio.sleep(0.25 * 2**attempt)

    def _basic(self) -> str:
        assert self._credentials is not None
        user, password = self._credentials
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def _who(self) -> str:
        if self._withheld:
            return (f"anonymous access (the credentials for {self.registry} go only to its own host or over "
                    "HTTPS, and its token server is neither)")
        return f"the credentials of {self._credentials[0]!r}" if self._credentials else "anonymous access"

    def _trusts(self, realm: str) -> bool:
        """Whether the token server at realm may see the credentials: on the registry's own host, or over HTTPS,
        as Docker decides. A registry naming a plain-HTTP realm elsewhere would otherwise hand the password to
        that host and to anyone on the way."""
        url = urlsplit(realm)
        return url.scheme == "https" or (url.hostname is not None and url.hostname == urlsplit(self.base).hostname)

    async def _authorize(self, challenge: str, what: str) -> None:
        import aiohttp

        scheme, params = auth.parse_challenge(challenge)
        if scheme == "basic":
            if not self._credentials:
                raise RuntimeFailure(
                    f"{what}: registry {self.registry} needs credentials; none for it in {auth.config_path()}"
                )
            self._authorization = self._basic()
            return
        if scheme != "bearer" or "realm" not in params:
            raise RuntimeFailure(f"{what}: registry {self.registry} asks for unsupported auth {challenge!r}")
        query = {"service": params.get("service", self.registry)}
        query["scope"] = params.get("scope") or f"repository:{self.repository}:pull"
        assert self._session is not None
        self._withheld = bool(self._credentials) and not self._trusts(params["realm"])
        headers = {"Authorization": self._basic()} if self._credentials and not self._withheld else {}
        try:
            async with self._session.get(params["realm"], params=query, headers=headers) as resp:
                if resp.status in (401, 403):
                    raise RuntimeFailure(
                        f"{what}: token server {params['realm']} refused {self._who()} ({resp.status})"
                    )
                if resp.status != 200:
                    raise RuntimeFailure(f"{what}: token server {params['realm']} answered {resp.status}")
                body = await resp.json(content_type=None)
        except aiohttp.ClientError as e:
            raise RuntimeFailure(f"{what}: token server {params['realm']} unreachable: {e}") from None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise RuntimeFailure(f"{what}: token server {params['realm']} returned no token")
        self._authorization = f"Bearer {token}"


class _Retry(Exception):
    pass
