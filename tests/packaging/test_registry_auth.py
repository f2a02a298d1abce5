"""Registry reads (sematic_k8s.registry) against a registry that asks for anonymous bearer tokens, over
real HTTP on 127.0.0.1: the token is fetched once and sent, a refusal is one RegistryAuthError, a missing tag None."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sematic_k8s.errors import RegistryAuthError
from sematic_k8s.registry import manifest_digest

MANIFEST = b'{"schemaVersion": 2}'
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


class Registry(BaseHTTPRequestHandler):
    """``/v2/app/manifests/<tag>`` behind a bearer challenge; tag ``nodigest`` omits Docker-Content-Digest,
    repository ``private`` refuses even with a token, tag ``gone`` does not exist."""

    tokens: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def _manifest(self, body: bool) -> None:
        if self.path.startswith("/token"):
            Registry.tokens.append(self.path)
            data = json.dumps({"token": "anon"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if self.headers.get("Authorization") != "Bearer anon":
            realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="test",scope="repository:app:pull"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/v2/private/"):
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.endswith("/gone"):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        if not self.path.endswith("/nodigest"):
            self.send_header("Docker-Content-Digest", DIGEST)
        self.send_header("Content-Length", str(len(MANIFEST)))
        self.end_headers()
        if body:
            self.wfile.write(MANIFEST)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's names
        self._manifest(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._manifest(body=True)


@pytest.fixture
def registry() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Registry.tokens.clear()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_challenged_read_fetches_one_anonymous_token_and_sends_it(registry: str) -> None:
    assert manifest_digest(f"{registry}/app", "v1") == DIGEST
    assert len(Registry.tokens) == 1 and "scope=repository%3Aapp%3Apull" in Registry.tokens[0]


def test_without_the_digest_header_the_manifest_is_hashed_with_the_same_token(registry: str) -> None:
    assert manifest_digest(f"{registry}/app", "nodigest") == DIGEST
    assert len(Registry.tokens) == 1


def test_a_missing_tag_is_none_and_a_refusal_names_the_image(registry: str) -> None:
    assert manifest_digest(f"{registry}/app", "gone") is None
    with pytest.raises(RegistryAuthError, match=rf"{registry} refused private:v1 \(403\)"):
        manifest_digest(f"{registry}/private", "v1")
