"""The security headers of every answer the app sends, set in one place (:func:`secured`, where the app hands its
answer to the server): a route, a mount, an error, the write fast path alike, so an answer added later is covered."""

from __future__ import annotations

from starlette.types import Message, Send

# The page's policy: never framed by another site (clickjacking its buttons), scripts only from this server (a string
# that slipped into the page as markup would run nothing), pictures of artifacts as data: URLs. Sent on every answer
# that names no policy of its own (the API docs page names its own, this one with its inline script's hash): the
# dashboard's page by any of its paths (``/``, ``/static/index.html``), and JSON, text, bytes (where a policy is
# harmless, and it stays strict for an HTML answer added later).
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
CSP = b"content-security-policy"
CACHE = (b"cache-control", b"no-store")  # a record read with a key is no cache's to keep (the page and its files:
# "no-cache", revalidated, dashboard.py; the live stream's own)
NOSNIFF = (b"x-content-type-options", b"nosniff")
NO_FRAMES = (b"x-frame-options", b"DENY")  # browsers without frame-ancestors


def secured(send: Send) -> Send:
    """``send``, but every answer says ``X-Content-Type-Options: nosniff`` (JSON, logs as text, an artifact's bytes, a
    refusal, a page: a browser takes each as the type it names, never as the HTML it may look like) and
    ``X-Frame-Options: DENY``; one without a ``Content-Security-Policy`` of its own gets :data:`PAGE_CSP`, one without
    a ``Cache-Control`` ``no-store`` (an API answer: a shared cache in front, keying by URL, never serves one key's
    reads to another client, nor a browser keeps them on disk)."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [h for h in message.get("headers", ()) if h[0].lower() not in (NOSNIFF[0], NO_FRAMES[0])]
            names = {h[0].lower() for h in headers}
            if CSP not in names:
                headers.append((CSP, PAGE_CSP.encode()))
            if CACHE[0] not in names:
                headers.append(CACHE)
            message = {**message, "headers": [*headers, NOSNIFF, NO_FRAMES]}
        await send(message)

    return sending
