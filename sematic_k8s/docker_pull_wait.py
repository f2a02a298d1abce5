"""The wait for an image whose registry does not answer, a worker's and a driver's alike: a failed pull tried
again with backoff (:class:`PullBackoff`) while the engine's words say the registry may still answer
(:func:`registry_unanswered`), for a grace counted from the first failure (:func:`pull_failing`,
:func:`past_grace`); :func:`pull_waiting`, a launcher's whole wait, on its caller's thread."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sematic_k8s.docker_pull import PULL_TICK, PullAbandoned, pull, silence_words
from sematic_k8s.docker_pull_progress import PullProgress, and_pulling, unpulled_words
from sematic_k8s.errors import ImageUnpulled
from sematic_k8s.retries import MAX_WAIT

PULL_GRACE = 120.0  # seconds an image is waited for while its registry does not answer (Kubernetes' pull_grace)
PULL_FIRST_WAIT = 0.5  # seconds before a failed pull is tried again; doubled each time, up to retries.MAX_WAIT
# the engine's words for a pull that failed because the registry did not answer, or answered "not now": a 5xx is
# "received unexpected HTTP status: 503 Service Unavailable"; a 429 "toomanyrequests: ..." when its body is a
# registry's error JSON (Docker Hub's), else "error parsing HTTP 429 response body: ..." (a bare one, a proxy's)
_UNREACHABLE = ("dial tcp", "connection refused", "connection reset", "i/o timeout", "TLS handshake timeout",
                "timeout exceeded", "toomanyrequests", "HTTP 429 response", "unexpected HTTP status: 5",
                "unexpected HTTP status: 429", "503 Service Unavailable", "502 Bad Gateway", "504 Gateway Timeout",
                "429 Too Many Requests", "made no progress for")


def registry_unanswered(said: str) -> bool:
    """Whether the engine's words for a failed pull (``said``) say the image's registry did not answer, or answered
    "not now" (a 5xx, 429): the image may come, where a registry's "manifest unknown" or "unauthorized" says it will
    not."""
    return any(words in said for words in _UNREACHABLE)


class PullBackoff:
    """When an image's pull that failed (its registry did not answer) is to be tried again: :data:`PULL_FIRST_WAIT`
    after the first failure, the wait doubled after each, up to :data:`~sematic_k8s.retries.MAX_WAIT`."""

    def __init__(self) -> None:
        self.at = 0.0  # monotonic time of the next try
        self.wait = PULL_FIRST_WAIT  # seconds between the last failed try and the next

    def due(self) -> bool:
        return time.monotonic() >= self.at

    def failed(self) -> None:
        self.at = time.monotonic() + self.wait
        self.wait = min(MAX_WAIT, 2 * self.wait)

    def pulled(self) -> None:
        self.at, self.wait = 0.0, PULL_FIRST_WAIT


def pull_failing(since: float | None, progress: PullProgress | None, came: float = float("-inf")) -> float | None:
    """When a wait for an image began failing (monotonic; None while it is not): at ``since``, its first failure (a
    try that failed, or the engine retrying a layer within one), when it had one; else when the try under way
    (``progress``) began to, at the engine's first retry of a layer in it or, none, at the start of its silence (a
    silent try fails from its silence's start, as its end would say), not before the wait ``came``."""
    if since is not None or progress is None:
        return since
    return max(came, progress.retried_at if progress.retried_at is not None else progress.heard_at)


def past_grace(since: float | None, grace: float, progress: PullProgress | None,
               came: float = float("-inf")) -> bool:
    """Whether a wait for an image (:func:`pull_failing`'s) is past its ``grace``: that long since it began failing,
    and the try under way (``progress``; None between tries), if any, no longer downloads
    (:meth:`PullProgress.moving`: a slow registry's large image is not cut). The one rule of :func:`pull_waiting`
    (a launcher's image) and of the Docker executor's runs, whose tries are abandoned by it at its deadline, a silent
    one too (:func:`pull` asks ``abandon()`` every :data:`PULL_TICK` seconds)."""
    start = pull_failing(since, progress, came)
    return start is not None and time.monotonic() - start >= grace and not (progress is not None and progress.moving())


def abandoned_words(said: str, progress: PullProgress, since: float | None) -> str:
    """The words of a wait ended with a try under way (past its grace, or stopped): the last failed try's (``said``)
    or, while none failed (``since`` None) and the try is silent, its silence's (:func:`silence_words`), with that
    try's progress."""
    silent = since is None and progress.retried_at is None
    return and_pulling(said or (silence_words(round(progress.silent_for())) if silent else ""),
                       progress.words(now=True))


def pull_waiting(client: Any, image: str, *, grace: float = PULL_GRACE,  # noqa: ANN401 - a docker client
                 waiting: Callable[[str, str], None] | None = None, stop: Any = None,
                 ended: Callable[[], bool] | None = None, pulling: Callable[[str], None] | None = None) -> bool:
    """Pull ``image``; while its registry does not answer (:func:`registry_unanswered`; a silent try fails from its
    silence's start), try again with :class:`PullBackoff` for ``grace`` seconds from the first failure: a failed
    try, or the engine retrying a layer within one (its stream's "Retrying in"). From then on
    ``waiting(said, progress)`` is told the last failed try's words ("" while none failed) and the try under way's
    progress (:class:`PullProgress`, "" between tries) whenever they change. Before, ``pulling(progress)`` is told
    the first try's progress as it changes (the same words, at the same rate: a healthy pull of a large image).
    Past the grace (:func:`past_grace`), even while a try is under way, a silent one too (it is abandoned: the
    engine's pull ends with it) unless that try is still downloading (:meth:`PullProgress.moving`), or at once for
    a definitive refusal (manifest unknown, unauthorized), or when ``stop`` (a threading.Event) is set:
    :class:`~sematic_k8s.errors.ImageUnpulled` in the engine's words. True once pulled; False, the try under way
    abandoned (a silent one too) and none tried again, when ``ended()`` says that whoever waits for it no longer
    does: asked every :data:`PULL_TICK` seconds at most (a read of a server's), during a try and between tries."""
    import docker.errors

    backoff, tries = PullBackoff(), 0
    since: float | None = None  # the first failure
    said, told, healthy = "", ("", ""), ""  # healthy: the first try's progress last told pulling()
    asked, gone = time.monotonic(), False  # when ended() was last asked (the wait's start: just begun), its answer

    def is_gone() -> bool:
        nonlocal asked, gone
        if ended is not None and not gone and time.monotonic() - asked >= PULL_TICK:
            asked, gone = time.monotonic(), ended()
        return gone

    def tell(progress: str) -> None:
        nonlocal told
        if waiting is not None and since is not None and (said, progress) != told:
            told = (said, progress)
            waiting(said, progress)

    def unpulled(words: str) -> ImageUnpulled:
        waited = time.monotonic() - (since if since is not None else time.monotonic())
        return ImageUnpulled(unpulled_words(image, words, waited if tries > 1 or waited >= grace else None))

    while True:
        if is_gone():
            return False
        progress = PullProgress(image)

        def abandon(progress: PullProgress = progress) -> bool:
            nonlocal since, healthy
            if since is None and progress.retried_at is not None:
                since = progress.retried_at
                tell(progress.words(now=True))  # the retry said at once, not the words of the try's start
            elif since is not None:
                tell(progress.words())
            elif pulling is not None and (words := progress.words()) != healthy:  # no failure yet: the try's own
                healthy = words
                pulling(words)
            return past_grace(since, grace, progress) or (stop is not None and stop.is_set()) or is_gone()

        try:
            pull(client, image, progress=progress, abandon=abandon)
            return True
        except PullAbandoned:
            if gone:  # no one waits for it any more: no failure to tell
                return False
            words, tries = abandoned_words(said, progress, since), tries + 1
            since = pull_failing(since, progress)
            raise unpulled(words) from None
        except docker.errors.APIError as e:
            said, tries = str(e.explanation or e), tries + 1
            since = progress.heard_at if since is None else since  # a silent try failed from its silence's start
            waited = time.monotonic() - since
            if not registry_unanswered(said) or waited >= grace or (stop is not None and stop.is_set()):
                raise unpulled(said) from None
        tell("")
        backoff.failed()
        resume = min(backoff.at, since + grace)
        while (pause := resume - time.monotonic()) > 0 and not is_gone():  # ended() asked meanwhile too
            if stop is None:
                time.sleep(min(pause, PULL_TICK))
            elif stop.wait(min(pause, PULL_TICK)):
                break
