"""A real registry on loopback for tests: Debian's docker-registry, open, behind htpasswd, or behind token auth.

Token auth uses a small token server of our own on 127.0.0.1 that checks basic credentials and signs
RS256 JWTs with openssl; the registry verifies them against the certificate we generate.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import secrets
import socket
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

REGISTRY = "/usr/bin/docker-registry"
SERVICE = "orchestr-test-registry"
ISSUER = "orchestr-test-issuer"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Issues registry tokens to user:password only; anyone else gets 401. Listens on host (a loopback address)."""

    def __init__(self, directory: Path, user: str, password: str, host: str = "127.0.0.1") -> None:
        self.key, self.cert = directory / "token.key", directory / "token.crt"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key, "-out", self.cert,
             "-days", "2", "-subj", "/CN=orchestr-test-token"],
            check=True, capture_output=True,
        )
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"], check=True,
                             capture_output=True).stdout
        self._x5c = base64.b64encode(der).decode()
        self._basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self._user = user
        self.requests: list[str] = []
        self.authorizations: list[str | None] = []  # the Authorization header of each request, None when absent
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(self.path)
                server.authorizations.append(self.headers.get("Authorization"))
                if self.headers.get("Authorization") != server._basic:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="orchestr-test"')
                    self.end_headers()
                    return
                query = parse_qs(urlparse(self.path).query)
                body = json.dumps({"token": server.token(query.get("scope", [])), "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.realm = f"http://{host}:{self._httpd.server_address[1]}/token"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def token(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": self._user, "aud": SERVICE, "exp": now + 600, "nbf": now - 60,
                  "iat": now, "jti": secrets.token_hex(8), "access": access}
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=signing_input.encode(),
                                   check=True, capture_output=True).stdout
        return f"{signing_input}.{_b64url(signature)}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    root: Path  # the registry's storage root
    creds: tuple[str, str] | None = None
    token_server: TokenServer | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    def push(self, archive: Path, name_tag: str, creds: tuple[str, str] | None = None, flags: tuple = ()) -> None:
        """Copy a docker-archive into the registry with skopeo (and skopeo copy's flags, if any)."""
        creds = creds or self.creds
        cmd = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", *flags]
        if creds:
            cmd += ["--dest-creds", f"{creds[0]}:{creds[1]}"]
        subprocess.run([*cmd, f"docker-archive:{archive}", f"docker://{self.host}/{name_tag}"],
                       check=True, capture_output=True)

    def push_layout(self, archive: Path, name_tag: str) -> None:
        """Upload an OCI image-layout tarball's first image blob by blob, as it is: no tool recompresses or
        swaps a layer for a variant it has seen elsewhere."""
        name, tag = name_tag.split(":")
        with tarfile.open(archive) as tar:
            def read(member: str) -> bytes:
                return tar.extractfile(member).read()

            desc = json.loads(read("index.json"))["manifests"][0]
            raw = read(f"blobs/sha256/{desc['digest'].removeprefix('sha256:')}")
            manifest = json.loads(raw)
            for blob in [manifest["config"], *manifest["layers"]]:
                status, headers, body = self.request("POST", f"/v2/{name}/blobs/uploads/")
                assert status == 202, (status, body)
                location = headers["Location"]
                path = urlparse(location)
                query = f"{path.query}&" if path.query else ""
                status, _, body = self.request(
                    "PUT", f"{path.path}?{query}digest={blob['digest']}",
                    read(f"blobs/sha256/{blob['digest'].removeprefix('sha256:')}"),
                    {"Content-Type": "application/octet-stream"})
                assert status == 201, (status, body)
        status, _, body = self.request("PUT", f"/v2/{name}/manifests/{tag}", raw, {"Content-Type": desc["mediaType"]})
        assert status == 201, (status, body)

    def request(self, method: str, path: str, data: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """A raw HTTP request to the registry, without credentials."""
        req = urllib.request.Request(f"http://{self.host}{path}", data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def manifest(self, name: str, reference: str) -> tuple[bytes, str]:
        """(raw manifest, media type) of an open registry's manifest."""
        accept = ", ".join([
            "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json",
        ])
        status, headers, body = self.request("GET", f"/v2/{name}/manifests/{reference}", headers={"Accept": accept})
        assert status == 200, (status, body)
        return body, headers["Content-Type"]

    def push_index(self, name: str, tag: str, images: list[tuple[str, dict]]) -> str:
        """Put an OCI index at name:tag over the given (tag, platform) manifests; returns its digest."""
        manifests = []
        for image_tag, platform in images:
            raw, media_type = self.manifest(name, image_tag)
            manifests.append({"mediaType": media_type, "digest": f"sha256:{hashlib.sha256(raw).hexdigest()}",
                              "size": len(raw), "platform": platform})
        index = json.dumps({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": manifests}).encode()
        status, _, body = self.request("PUT", f"/v2/{name}/manifests/{tag}", index, {"Content-Type": INDEX_TYPE})
        assert status == 201, (status, body)
        return f"sha256:{hashlib.sha256(index).hexdigest()}"

    def blob_data(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes, for tests that corrupt it."""
        hex_ = digest.removeprefix("sha256:")
        return self.root / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


@contextlib.contextmanager
def running_registry(directory: Path, auth: str | None = None, creds: tuple[str, str] = ("alice", "s3cret"),
                     token_host: str = "127.0.0.1") -> Iterator[Registry]:
    """A docker-registry on a free loopback port; auth is None, "htpasswd" or "token" (its token server on
    token_host: 127.0.0.2 is another host than the registry's 127.0.0.1)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = [
        "version: 0.1", "log:", "  level: warn",
        "storage:", "  filesystem:", f"    rootdirectory: {directory / 'data'}",
        "  delete:", "    enabled: true", "http:", f"  addr: 127.0.0.1:{port}",
    ]
    token_server = None
    if auth == "htpasswd":
        htpasswd = subprocess.run(["htpasswd", "-Bbn", *creds], check=True, capture_output=True, text=True).stdout
        (directory / "htpasswd").write_text(htpasswd)
        config += ["auth:", "  htpasswd:", "    realm: orchestr-test", f"    path: {directory / 'htpasswd'}"]
    elif auth == "token":
        token_server = TokenServer(directory, *creds, host=token_host)
        config += ["auth:", "  token:", f"    realm: {token_server.realm}", f"    service: {SERVICE}",
                   f"    issuer: {ISSUER}", f"    rootcertbundle: {token_server.cert}"]
    (directory / "config.yml").write_text("\n".join(config) + "\n")
    log = open(directory / "registry.log", "wb")  # noqa: SIM115
    process = subprocess.Popen([REGISTRY, "serve", str(directory / "config.yml")], stdout=log, stderr=log)
    registry = Registry(f"127.0.0.1:{port}", directory / "data", creds if auth else None, token_server, process)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status = registry.request("GET", "/v2/")[0]
                if status in (200, 401):
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start: {(directory / 'registry.log').read_text()}")
            time.sleep(0.05)
        yield registry
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        if token_server:
            token_server.close()


def docker_config(directory: Path, host: str, user: str, password: str) -> Path:
    """A Docker-format config.json with credentials for host; point DOCKER_CONFIG at the returned dir."""
    directory.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return directory
