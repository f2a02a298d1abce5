"""An HTTP front on a real S3 API (moto) that answers a script of S3's own error answers to presigned requests (those
whose query is signed: a worker's) and forwards everything else, for answers moto never gives to one (a 400
EntityTooLarge, a 405, a 411, a proxy's 413, a 400 RequestTimeout); with no S3 API behind it, a stand-in service
answering every request from its script (a 503 SlowDown, then a 200)."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


def s3_error(code: str, message: str, **more: str) -> bytes:
    """S3's XML error body: its ``Code``, its ``Message``, and any other elements (``BucketName``, ``Key``)."""
    rest = "".join(f"<{k}>{v}</{k}>" for k, v in more.items())
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>{rest}'
            "<RequestId>4442587FB7D0A2F9</RequestId></Error>").encode()


@dataclass
class Front:
    """The front's address (``endpoint``) and its script: ``answers[method]``, the (status, body) answered to that
    method's next presigned requests, one each, in order (then they are forwarded; with no backend, every request is
    answered so, the last answer again once the others are spent); ``refused``: the path of each request it answered
    from the script, ``presigned``: of each presigned one it saw (answered or forwarded; with no backend, each)."""

    endpoint: str = ""
    answers: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    presigned: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, method: str, path: str, *, keep_last: bool = False) -> tuple[int, bytes] | None:
        """The scripted answer to a presigned ``method`` of ``path`` (its query cut off), if one is left (its last one
        kept for the next request too, if ``keep_last``)."""
        with self.lock:
            self.presigned.append(f"{method} {path}")
            script = self.answers.get(method) or []
            if not script:
                return None
            self.refused.append(f"{method} {path}")
            return script[0] if keep_last and len(script) == 1 else script.pop(0)


NOT_SCRIPTED = (501, s3_error("NotImplemented", "The stand-in service has no answer scripted for this method."))


def relay(handler: http.server.BaseHTTPRequestHandler, target: str | None,
          scripted: tuple[int, bytes] | None) -> None:
    """Answer ``handler``'s request with ``scripted`` (status, S3's XML body), or, when None, with what the S3 API at
    ``target`` (host:port) answers it (with no target: :data:`NOT_SCRIPTED`)."""
    body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
    if scripted is None and target is None:
        scripted = NOT_SCRIPTED
    if scripted is not None:
        status, payload = scripted
        headers = [("Content-Type", "application/xml")]
    else:
        conn = http.client.HTTPConnection(target, timeout=60)
        conn.request(handler.command, handler.path, body=body or None,
                     headers={k: v for k, v in handler.headers.items() if k.lower() != "connection"})
        resp = conn.getresponse()
        status, payload = resp.status, resp.read()
        headers = [(k, v) for k, v in resp.getheaders()
                   if k.lower() not in ("content-length", "connection", "transfer-encoding")]
        conn.close()
    handler.send_response(status)
    for k, v in headers:
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(payload)


@contextlib.contextmanager
def s3_front(backend: str | None = None) -> Iterator[Front]:
    """A :class:`Front` on 127.0.0.1 forwarding to the S3 API at ``backend`` (a URL); with none, a stand-in service
    answering each request from its script, for a module's top level to call (boto3, httpx, requests, urllib)."""
    front = Front()
    target = urlsplit(backend).netloc if backend else None

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            path = self.path.split("?")[0]
            if target is None:
                relay(self, None, front.answer(self.command, path, keep_last=True))
                return
            presigned = "X-Amz-Signature=" in self.path or "Signature=" in self.path
            relay(self, target, front.answer(self.command, path) if presigned else None)

        do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _any  # noqa: N815 - http.server's names

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="s3-front").start()
    front.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield front
    finally:
        server.shutdown()
        server.server_close()
