"""The artifact storages this server reads: its default and an allow-list, never one a record names.

A cloud resolution records where its artifacts and logs live (``settings.storage_url``). The server reads
them there only when that storage is its own default or on its allow-list ($SEMATIC_K8S_STORAGE_ALLOW,
comma-separated URLs); a record naming any other location gets a clear error and nothing is fetched, so a
record can never make the server contact a host, or open a path, of its choosing.
"""

from __future__ import annotations

import os
import posixpath
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlparse

from sematic_k8s.settings import STORAGE_ALLOW_ENV
from sematic_k8s.storage.base import Storage
from sematic_k8s.storage.urls import storage_from_url, storage_url

ALLOW_ENV = STORAGE_ALLOW_ENV
SHOWN_URL = 200  # characters of a recorded storage URL an answer shows
REQUEST_RETRY_WINDOW = 3.0  # seconds a request waits out a storage outage before answering 503 (clients retry)


class StorageNotAllowed(Exception):
    """A record names a storage this server is not configured to read."""


def normalize(url: str) -> str:
    """One spelling per configured storage: ``file:`` URLs resolved, no trailing slash."""
    parsed = urlparse(url.strip())
    if parsed.scheme == "file":
        return Path(parsed.path).resolve().as_uri()
    return url.strip().rstrip("/")


def spelled(recorded: str) -> str | None:
    """A recorded storage URL's spelling, as :func:`normalize` spells a configured one but read from its text alone
    (a ``file:`` path's ``.`` and ``..`` taken out, no link followed: the file system is never asked about a path a
    record names); None for text that is no URL (a NUL character, a bracket no host closes, a relative path), which
    names no storage. Clients record their storage's URL so spelled (a local storage's path resolved)."""
    try:
        parsed = urlparse(recorded.strip())
    except ValueError:  # "s3://[bucket": an IPv6 host unclosed
        return None
    if "\x00" in recorded:
        return None
    if parsed.scheme == "file":
        path = posixpath.normpath(parsed.path)
        return Path(path).as_uri() if path.startswith("/") else None
    return recorded.strip().rstrip("/")


def spellings(configured: str, written: str | None = None) -> tuple[str, ...]:
    """The spellings a record may give of a configured storage URL: :func:`normalize`'s (a ``file:`` path's links
    followed, as a local storage's own URL is), and as written (``written``, else ``configured``; read as
    :func:`spelled` reads a record: a CloudResolver records the URL its user gave, links and all)."""
    return tuple(dict.fromkeys(u for u in (normalize(configured), spelled(written or configured)) if u))


def names(recorded: str, configured: str | Iterable[str]) -> bool:
    """Whether a recorded storage URL names a configured one (``configured``: its URL, or its :func:`spellings`): the
    same scheme, bucket and prefix (or path), and every setting the record gives (``?endpoint=``, ``?region=``) equal
    to the configured one's. A record that gives no endpoint means "the reader's own", i.e. the configured storage.
    One that is no URL names none (:func:`spelled`); a record's path is compared as written, never looked up."""
    text = spelled(recorded)
    if text is None:
        return False
    a = urlparse(text)
    for spelling in spellings(configured) if isinstance(configured, str) else configured:
        b = urlparse(spelling)
        if (a.scheme, a.netloc, a.path.rstrip("/")) == (b.scheme, b.netloc, b.path.rstrip("/")):
            theirs = dict(parse_qsl(b.query))
            return all(theirs.get(k) == v for k, v in parse_qsl(a.query))
    return False


class Storages:
    """The default storage, and storages opened on first use from the allow-list."""

    def __init__(self, default: Storage, allowed: Iterable[str] = ()) -> None:
        self.default = default
        try:
            url = storage_url(default)
        except ValueError:
            self.default_urls: tuple[str, ...] = ()
        else:  # a local storage's root as it was given (made absolute, links kept), beside its URL (links followed)
            root = getattr(default, "root", None)
            self.default_urls = spellings(url, Path(os.path.abspath(root)).as_uri() if root is not None else None)
        self.allowed = {normalize(u): spellings(u) for u in allowed if u.strip()}
        self._opened: dict[str, Storage] = {}
        self._lock = threading.Lock()

    def for_url(self, url: object) -> Storage:
        """The configured storage that ``url`` names (None: the default); StorageNotAllowed when it names none (or
        is not a string: a record's value). Only configured URLs are ever opened, never the recorded one."""
        if not url:
            return self.default
        if not isinstance(url, str):
            raise StorageNotAllowed(f"recorded in {str(url)[:SHOWN_URL]!r}, not a storage URL: this server does not "
                                    "read it")
        if names(url, self.default_urls):
            return self.default
        key = next((u for u, spelled_as in self.allowed.items() if names(url, spelled_as)), None)
        if key is None:  # the URL as recorded (a client's: up to the settings' bound), cut for one line
            shown = url if len(url) <= SHOWN_URL else url[:SHOWN_URL] + f"... ({len(url)} characters)"
            if spelled(url) is None:
                raise StorageNotAllowed(f"recorded in {shown!r}, which is no storage URL (file:///path or "
                                        "s3://bucket/prefix): this server does not read it")
            raise StorageNotAllowed(
                f"recorded in {shown}, which this server does not read: add it to ${ALLOW_ENV} "
                "(comma-separated storage URLs) on the server to show it here")
        with self._lock:
            if key not in self._opened:
                self._opened[key] = storage_from_url(key, retry_window=REQUEST_RETRY_WINDOW)
            return self._opened[key]

    def of_resolution(self, store: Any, root_id: str) -> Storage:
        """The storage resolution ``root_id`` recorded its artifacts and logs in (``settings.storage_url``;
        none recorded: the default); StorageNotAllowed, naming the resolution, when it is not one of ours."""
        res = store.get_resolution(root_id)
        settings = res.settings if res and isinstance(res.settings, dict) else {}
        url = settings.get("storage_url") or None
        try:
            return self.for_url(url)
        except StorageNotAllowed as e:
            raise StorageNotAllowed(f"resolution {root_id}'s artifacts and logs are {e}") from None
