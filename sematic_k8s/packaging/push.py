"""Push an image, and ask whether the registry still holds one, riding out a registry that fails for a while.

The Docker engine retries a failed layer upload itself, but gives up at once on a 429, on any failure of the manifest
and on a registry that drops its first connection: :func:`push_image` pushes again for the retry window
($SEMATIC_K8S_RETRY_WINDOW; the layers already there are not sent again), saying why in ``registry:`` lines, then
raises :class:`~sematic_k8s.errors.RegistryUnavailable` naming the registry, what it answered and what to check.
The engine waits on a registry that stops answering (a stopped or hung process whose port still accepts, a proxy that
stopped forwarding) for as long as it takes, saying nothing: a push whose engine says nothing for
:data:`PUSH_SILENCE` while the engine itself answers is such a registry's, given up and pushed again the same way;
while it is silent, that is said every :data:`SILENCE_SAID_EVERY` seconds.
:func:`image_in_registry` is the check a recorded image passes before a rerun reuses it.
"""

from __future__ import annotations

import http.client
import logging
import re
import socket
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sematic_k8s import settings
from sematic_k8s.docker_engine import PROBE_TIMEOUT, docker_client, engine_calls
from sematic_k8s.errors import PushError, RegistryAuthError, RegistryUnavailable
from sematic_k8s.registry import UNANSWERED, Repo, manifest_digest
from sematic_k8s.retries import RetryLater, retrying

logger = logging.getLogger("sematic_k8s.packaging")
Progress = Callable[[str], None]
# a look-up of a recorded image that got no answer for the retry window, or kept being told to come back later
_GAVE_UP: tuple[type[Exception], ...] = (*UNANSWERED, RetryLater)
# seconds a push's stream from the engine may say nothing (the engine waiting on the registry's answer: a layer's last
# PUT, the manifest's) before the push is given up as the registry's silence and made again (was: the build client's
# 900 s, then "the Docker engine ... stopped answering")
PUSH_SILENCE = 300.0
# seconds between the lines saying, while the push's stream is silent, how long the registry has not answered
SILENCE_SAID_EVERY = 30.0


def push_image(client: Any, repo: str, tag: str, progress: Progress | None = None) -> str:
    """Push ``repo:tag``; returns the ``repo@sha256:...`` reference, confirmed against the image's RepoDigests.

    The Docker engine tries a layer upload again itself (5 times, 5 to 25 s apart: said as a ``registry:`` line);
    a push it gives up on because the registry did not answer, dropped the connection or answered 429 or 5xx (it
    gives up at once on a 429, and on any failure of the manifest) is pushed again, saying why, for the retry window
    (layers already there are not sent again); then :class:`RegistryUnavailable` says what the registry answered and
    what to check. Other refusals (credentials, a bad name) are a :class:`PushError` at once.
    """
    say = progress or (lambda line: logger.info("%s", line))
    host = Repo.parse(repo).host
    window = settings.retry_window()
    try:
        for attempt in retrying(f"the registry {host}", (PushInterrupted,), window):
            with attempt:
                try:
                    digest = _push_once(client, repo, tag, say)
                except PushInterrupted as e:
                    say(f"registry: {host} {e.did} to the push of {repo}:{tag} ({e.said}); pushing again, for up to "
                        f"{window:g} s in all")
                    raise
    except PushInterrupted as e:
        raise RegistryUnavailable(f"push of {repo}:{tag} failed: the registry {host} {e.did}, still after {window:g} s "
                                  f"of tries (the Docker engine said: {e.said}); {e.fix}") from None
    ref = f"{repo}@{digest}"
    with engine_calls(f"pushing {repo}:{tag}"):
        image = client.images.get(f"{repo}:{tag}")
    if ref not in (image.attrs.get("RepoDigests") or []):
        raise PushError(f"pushed digest {ref} is not among the image's RepoDigests {image.attrs.get('RepoDigests')}")
    return ref


class PushInterrupted(Exception):
    """A push the engine gave up on for a reason that passes: what the registry ``did``, what the engine ``said``,
    and what to check (``fix``) should it last."""

    def __init__(self, did: str, said: str, fix: str) -> None:
        super().__init__(f"{did}: {said}")
        self.did, self.said, self.fix = did, said, fix


_REACH = "is it running, and reachable from the Docker engine at that address? Start it (or set the registry to " \
         "one that is), then try again"
_TROUBLE = (  # the engine's words about a failed push -> what the registry did, what to check should it last
    (re.compile(r"HTTP status: (5\d\d[^\"]*)", re.I), "answered {}",
     "it is failing or overloaded (its log says why): try again once it answers"),
    (re.compile(r"\b429\b|toomanyrequests", re.I), "answered 429 Too Many Requests",
     "it limits how many requests it takes: try again later, or raise its limit"),
    (re.compile(r"connection refused", re.I), "refused the connection", _REACH),
    (re.compile(r"connection reset|broken pipe|\bEOF\b|closed idle connection|use of closed network", re.I),
     "dropped the connection", _REACH),  # Go's net/http: "http: server closed idle connection"
    (re.compile(r"time(?:d )?out|deadline exceeded", re.I), "did not answer in time", _REACH),
)


def interrupted(why: str) -> PushInterrupted | None:
    """The engine's words about a failed push as a :class:`PushInterrupted` when they name a reason that passes."""
    for pattern, did, fix in _TROUBLE:
        if m := pattern.search(why):
            return PushInterrupted(did.format(*(g.strip() for g in m.groups())), why, fix)
    return None


def _push_once(client: Any, repo: str, tag: str, say: Progress) -> str:
    """One ``docker push``: its digest. Raises :class:`PushInterrupted` when the engine gave up for a reason that
    passes, or said nothing for :data:`PUSH_SILENCE` while it answers (the registry silent), :class:`PushError` for
    any other."""
    host = Repo.parse(repo).host
    digest, last = "", "nothing"  # the engine's last word on the push
    layer_state: dict[str, str] = {}
    with engine_calls(f"pushing {repo}:{tag}"):
        try:
            with _silence_said(host, say) as (heard, said):
                with _timeout(client, PUSH_SILENCE):  # the request's socket keeps it for the whole stream
                    stream = client.api.push(repo, tag=tag, stream=True, decode=True)
                for chunk in stream:
                    heard()
                    _push_chunk(chunk, f"{repo}:{tag}", host, layer_state, said)
                    last = str(chunk.get("status") or last)
                    aux = chunk.get("aux")
                    if isinstance(aux, dict) and aux.get("Digest"):
                        digest = aux["Digest"]
        except Exception as e:
            if _timed_out(e) and _engine_answers(client):  # the engine waits on the registry, saying nothing
                raise PushInterrupted("did not answer in time", f"nothing, for {PUSH_SILENCE:g} s after {last!r}, "
                                      "waiting on the registry", _REACH) from None
            raise
    if not digest:
        raise PushError(f"push of {repo}:{tag} reported no digest")
    return digest


def _push_chunk(chunk: dict[str, Any], ref: str, host: str, layer_state: dict[str, str], say: Progress) -> None:
    """One of the engine's words on the push of ``ref``: its error raised (:class:`PushInterrupted` when it passes),
    its status said (a layer's when it changes; the engine's own retry of a layer once)."""
    if "error" in chunk or "errorDetail" in chunk:
        why = str(chunk.get("error") or (chunk.get("errorDetail") or {}).get("message") or chunk)
        if (passing := interrupted(why)) is not None:
            raise passing
        raise PushError(f"push of {ref} failed: {why}; is the registry {host} running and reachable "
                        f"from the Docker engine, and does it take its credentials (`docker login {host}`)?")
    status, layer = chunk.get("status"), chunk.get("id")
    if not status:
        return
    if layer:
        was, layer_state[layer] = layer_state.get(layer), status
        if status.startswith("Retrying in "):  # the engine's own retry, counting down each second
            if not (was or "").startswith("Retrying in "):
                say(f"registry: {host} did not take layer {layer}; the Docker engine tries again "
                    f"{status.lower().replace('retrying ', '')}")
        elif was != status:
            total = (chunk.get("progressDetail") or {}).get("total")
            say(f"push {layer}: {status}" + (f" ({total / 1e6:.1f} MB)" if total else ""))
    else:
        say(f"push: {status}")


@contextmanager
def _silence_said(host: str, say: Progress) -> Iterator[tuple[Callable[[], None], Progress]]:
    """Inside, while the engine says nothing on the push (the registry not answering it), says so every
    :data:`SILENCE_SAID_EVERY` seconds of that silence: "registry: <host> has not answered for N s (giving up at
    300 s)". Yields what to call at each of the engine's words (a new silence starts from it), and ``say`` for the
    push's own words, one line at a time with the watcher's (a plain-line progress has no lock of its own)."""
    every, last_heard = SILENCE_SAID_EVERY, [time.monotonic()]
    stop, one_at_a_time = threading.Event(), threading.Lock()

    def said(line: str) -> None:
        with one_at_a_time:
            say(line)

    def watch() -> None:
        silence, told = last_heard[0], 0.0  # the silence's start, and how long of it was said
        while not stop.wait(min(every / 4, 1.0)):
            if last_heard[0] != silence:
                silence, told = last_heard[0], 0.0
            due = (time.monotonic() - silence) // every * every
            if due > told:
                told = due
                said(f"registry: {host} has not answered for {due:g} s (giving up at {PUSH_SILENCE:g} s)")

    watcher = threading.Thread(target=watch, name="push-silence", daemon=True)
    watcher.start()
    try:
        yield (lambda: last_heard.__setitem__(0, time.monotonic())), said
    finally:
        stop.set()
        watcher.join()


@contextmanager
def _timeout(client: Any, seconds: float) -> Iterator[None]:
    """Requests ``client`` sends inside wait ``seconds`` for each read (its own timeout again after: a client is used
    by one push at a time)."""
    before, client.api.timeout = client.api.timeout, seconds
    try:
        yield
    finally:
        client.api.timeout = before


def _timed_out(e: BaseException) -> bool:
    """Whether a read of the engine's answer timed out (anywhere in ``e``'s causes)."""
    import requests
    import urllib3

    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, (socket.timeout, urllib3.exceptions.ReadTimeoutError, requests.exceptions.ReadTimeout)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _engine_answers(client: Any) -> bool:
    """Whether the engine answers a ping within :data:`~sematic_k8s.docker_engine.PROBE_TIMEOUT`."""
    try:
        with _timeout(client, PROBE_TIMEOUT):
            return bool(client.ping())
    except Exception:  # noqa: BLE001 - no answer, or not one: the engine is not known to answer
        return False


def image_in_registry(repo: str, digest: str, client: Any = None) -> bool:
    """Whether the registry still holds ``repo@digest``: one HEAD on its manifest, False on 404 (deleted, garbage-
    collected). A registry that does not answer, or answers 429 or 5xx, is asked again for the retry window (after its
    Retry-After), then :class:`RegistryUnavailable`; one that wants credentials is asked through the Docker engine,
    with its logins (any failure there: False, the image is built and pushed again)."""
    host = Repo.parse(repo).host
    window = settings.retry_window()
    try:
        for attempt in retrying(f"the registry {host}", _unanswered, window):
            with attempt:
                return _manifest_known(repo, digest)
    except RegistryAuthError:
        pass
    except urllib.error.HTTPError as e:  # an answer that no retry changes
        raise RegistryUnavailable(f"the registry {host} answered {e.code} {e.reason} when asked whether image "
                                  f"{repo}@{digest} is still there (HEAD of its manifest)") from None
    except _GAVE_UP as e:
        did = str(e) if isinstance(e, RetryLater) else f"did not answer ({_reason(e)})"
        raise RegistryUnavailable(f"the registry {host} {did} when asked whether image {repo}@{digest} is still there, "
                                  f"still after {window:g} s of tries: is it running, and reachable from here at that "
                                  "address? Start it (or set the registry to one that is), then try again") from None
    try:
        with engine_calls(f"asking for {repo}@{digest}"):
            (client or docker_client()).api.inspect_distribution(f"{repo}@{digest}")
        return True
    except Exception as e:  # noqa: BLE001 - not confirmed: built and pushed again
        logger.info("no manifest for %s@%s (%s)", repo, digest, e)
        return False


def _manifest_known(repo: str, digest: str) -> bool:
    try:
        return manifest_digest(repo, digest) is not None
    except urllib.error.HTTPError as e:
        if e.code == 429 or e.code >= 500:
            after = e.headers.get("Retry-After") if e.headers else None
            raise RetryLater(f"answered {e.code} {e.reason}",
                             float(after) if after and after.isdigit() else None) from None
        raise


def _unanswered(e: BaseException) -> bool:
    """A registry look-up that failed for want of an answer (refused, dropped, timed out, cut off or garbled), not
    for one it gave."""
    return isinstance(e, UNANSWERED) and not isinstance(e, urllib.error.HTTPError)


def _reason(e: BaseException) -> str:
    why = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(why, OSError) and why.strerror:
        return why.strerror
    text = " ".join(str(why).split())  # one line: a garbled status line ends in its line break
    return f"{type(why).__name__}: {text}" if isinstance(why, http.client.HTTPException) else text or type(why).__name__
