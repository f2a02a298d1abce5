"""Talking to the Kubernetes API server: a client, the namespace to work in, retried calls, the calls a driver
makes about its workers (:class:`NamespacedApi`), refusals in plain words, and a creation rate limit. Everything
that calls the API (the executor, the driver launcher, the watches) goes through here, and every call has a deadline
(:func:`request_timeout`): a connection cut without a reset (a partition, a load balancer that stopped forwarding) is
never answered, and would otherwise be waited for until TCP keepalive gives up (hours).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family
from urllib3.util.timeout import Timeout

from sematic_k8s.errors import CallStopped, KubernetesForbidden, KubernetesUnanswered, KubernetesUnauthorized
from sematic_k8s.retries import RetriesStopped, check_stopped, pause, stopped_by
from sematic_k8s.settings import KUBE_HOST_ENV, KUBE_TIMEOUT_ENV, NAMESPACE_ENV
from sematic_k8s.stopping import Stop

log = logging.getLogger("sematic_k8s.k8s")
T = TypeVar("T")

CONNECT_TIMEOUT = 10.0  # seconds to connect to the API server, at most
READ_TIMEOUT = 60.0  # seconds for its answer: the API server's own --request-timeout (it answers 504 past it)
TIMEOUT_TRIES = 3  # calls that time out, in a row of retries, before the call fails (KubernetesUnanswered)


def request_timeout() -> tuple[float, float]:
    """A call's (connect, read) deadline: $SEMATIC_K8S_KUBE_TIMEOUT seconds (default 60) for its answer, and 10 (or
    less) to connect. Read once, by :func:`make_api_client`, which keeps it on its client (a bad value refused
    there, in one line)."""
    raw = os.environ.get(KUBE_TIMEOUT_ENV)
    try:
        read = float(raw) if raw else READ_TIMEOUT
    except ValueError:
        raise ValueError(f"${KUBE_TIMEOUT_ENV}={raw!r} is not a number of seconds: set it to one, "
                         f"e.g. {READ_TIMEOUT:g}") from None
    if not read > 0 or read == float("inf"):
        raise ValueError(f"${KUBE_TIMEOUT_ENV}={raw!r} must be more than 0 seconds, e.g. {READ_TIMEOUT:g}")
    return min(CONNECT_TIMEOUT, read), read


class _NoReadRetry(urllib3.Retry):
    """urllib3's retries but for a read that timed out: that is :func:`api_call`'s to retry (and count), not retried
    unseen (urllib3 would try a GET 4 times, each for the whole deadline)."""

    def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                  error: Exception | None = None, _pool: Any = None, _stacktrace: Any = None) -> _NoReadRetry:
        if isinstance(error, urllib3.exceptions.ReadTimeoutError):
            raise error
        return super().increment(method, url, response, error, _pool, _stacktrace)


class _DeadlineClient(client.ApiClient):
    """The official client, every call of which has a deadline: ``deadline`` (:func:`request_timeout`'s, read when
    the client was made) unless the caller gives one (a watch, which is long by design, does); ``stop``: its
    :func:`make_api_client`'s (which :func:`api_call`'s pauses between tries wait on)."""

    def __init__(self, configuration: client.Configuration, deadline: tuple[float, float],
                 stop: Stop | None = None) -> None:
        super().__init__(configuration)
        self.deadline, self.stop = deadline, stop

    def call_api(self, method: Any, url: Any, header_params: Any = None, body: Any = None, post_params: Any = None,
                 _request_timeout: Any = None) -> Any:
        return super().call_api(method, url, header_params, body, post_params,
                                _request_timeout if _request_timeout is not None else self.deadline)


def _connect_told(address: tuple[str, int], timeout: Any, source_address: tuple[str, int] | None,
                  options: Any, stop: Stop) -> socket.socket:
    """urllib3's ``create_connection`` (each of the host's addresses tried in turn), each socket told to ``stop``
    before its connect: set, it ends a connect under way (the socket shut down, the connect fails at once), or
    refuses one (:class:`CallStopped`). A copy of urllib3 2.x's (pinned ``<3``): a change of that function fails
    ``tests/k8s/test_urllib3_copy.py`` (re-check this copy against the new one, then update the test's digest)."""
    host, port = address
    err: OSError | None = None
    for af, socktype, proto, _, sa in socket.getaddrinfo(host.strip("[]"), port, allowed_gai_family(),
                                                         socket.SOCK_STREAM):
        sock = socket.socket(af, socktype, proto)
        try:
            for option in options or ():
                sock.setsockopt(*option)
            if timeout is not Timeout.DEFAULT_TIMEOUT:  # urllib3's token for the socket's default
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            if not stop.opened(sock):
                raise CallStopped("a connect to the Kubernetes API")
            sock.connect(sa)
            return sock
        except OSError as e:
            err = e
            stop.closed(sock)
            sock.close()
        except BaseException:
            stop.closed(sock)
            sock.close()
            raise
    raise err if err is not None else OSError("getaddrinfo returns an empty list")


class _StoppableConnection(HTTPConnection):
    """A connection of a client made with a ``stop`` (:func:`make_api_client`): its socket told to the stop before
    its connect, so that its set ends the call under way at once (its connect, or its blocked read, returns), and that
    call, and any made after it, raise :class:`CallStopped`, which neither urllib3 nor :func:`api_call` tries again. A
    pause of :func:`api_call` between two tries is ended too."""

    def __init__(self, *args: Any, stop: Stop, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stop = stop
        self._call = "a call to the Kubernetes API"  # the call under way, in words

    def _new_conn(self) -> socket.socket:
        """urllib3's, its socket told to the stop before its connect (:func:`_connect_told`), its errors urllib3's."""
        try:
            return _connect_told((self._dns_host, self.port), self.timeout, self.source_address, self.socket_options,
                                 self._stop)
        except socket.gaierror as e:
            raise NameResolutionError(self.host, self, e) from e
        except TimeoutError as e:
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
                                      ) from e
        except OSError as e:
            if self._stop.is_set():  # its connect ended by the stop
                raise CallStopped(self._call) from e
            raise NewConnectionError(self, f"Failed to establish a new connection: {e}") from e
        except CallStopped:
            raise CallStopped(self._call) from None

    def connect(self) -> None:
        if self._stop.is_set():
            raise CallStopped(self._call)
        try:
            super().connect()
        except Exception as e:
            if self._stop.is_set():  # its socket shut down (a TLS handshake's): nothing to try again
                raise CallStopped(self._call) from e
            raise
        if self.sock is not None and not self._stop.opened(self.sock):  # over TLS: its own socket
            self.close()
            raise CallStopped(self._call)

    def calling(self, method: str, url: str) -> None:
        """The call it makes next is ``method`` ``url`` (its pool's, before its connect: over TLS, made first)."""
        self._call = f"the Kubernetes API call {method} {url.partition('?')[0]}"

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> None:
        if self._stop.is_set():
            raise CallStopped(self._call)
        super().request(method, url, *args, **kwargs)

    def getresponse(self) -> Any:  # noqa: ANN401 - urllib3's HTTPResponse
        try:
            return super().getresponse()
        except Exception as e:
            if self._stop.is_set():  # its socket shut down: not an answer cut, nothing to try again
                raise CallStopped(self._call) from e
            raise

    def close(self) -> None:
        if self.sock is not None:
            self._stop.closed(self.sock)
        super().close()


class _StoppableHTTPSConnection(_StoppableConnection, HTTPSConnection):
    """:class:`_StoppableConnection` over TLS. Its handshake wraps its socket (``SSLContext.wrap_socket``: the socket
    told is detached, its file descriptor the TLS socket's from then on, so that shutting the told one down does
    nothing), so the stop is told, until its :meth:`connect` ended, a duplicate of it as well (``socket.dup``: the
    same connection, which a shutdown of either shuts down; a descriptor of its own, never another file's), and the
    TLS socket once made. Closed when the connect ended, the duplicate never holds the connection open after it."""

    _twin: socket.socket | None = None  # the duplicate told to the stop while the connect is under way

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        twin = sock.dup()
        if not self._stop.opened(twin):
            twin.close()
            self._stop.closed(sock)
            sock.close()
            raise CallStopped(self._call)
        self._twin = twin
        return sock

    def connect(self) -> None:
        try:
            super().connect()
        finally:
            twin, self._twin = self._twin, None
            if twin is not None:
                self._stop.closed(twin)
                twin.close()


class _StoppableHTTPPool(urllib3.HTTPConnectionPool):
    """Its connections :class:`_StoppableConnection`, each told the call it makes before it connects for it."""

    ConnectionCls = _StoppableConnection

    def _make_request(self, conn: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        conn.calling(method, url)
        return super()._make_request(conn, method, url, *args, **kwargs)


class _StoppableHTTPSPool(_StoppableHTTPPool, urllib3.HTTPSConnectionPool):
    ConnectionCls = _StoppableHTTPSConnection


def make_api_client(host: str | None = None, stop: Stop | None = None) -> client.ApiClient:
    """A client for ``host`` (or $SEMATIC_K8S_KUBE_HOST), else in-cluster config, else ~/.kube/config; each of its
    calls has a deadline (:func:`request_timeout`: a bad $SEMATIC_K8S_KUBE_TIMEOUT is refused here, a ValueError).
    ``stop`` set ends its calls under way, and their pauses between tries (:func:`api_call`), and refuses later ones
    (:class:`_StoppableConnection`)."""
    from kubernetes import config

    deadline = request_timeout()
    host = host or os.environ.get(KUBE_HOST_ENV)
    if host:
        configuration = client.Configuration(host=host)
    else:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
        else:
            config.load_kube_config()
        configuration = client.Configuration.get_default_copy()
    configuration.retries = _NoReadRetry(3)  # urllib3's default (Retry.DEFAULT), read timeouts aside
    api = _DeadlineClient(configuration, deadline, stop)
    if stop is not None:  # its pools' connections given the stop (a pool passes its extra keywords to each one)
        pools: dict[str, Any] = {"http": functools.partial(_StoppableHTTPPool, stop=stop),  # called as a class is
                                 "https": functools.partial(_StoppableHTTPSPool, stop=stop)}
        api.rest_client.pool_manager.pool_classes_by_scheme = pools
    return api


def current_namespace() -> str:
    """$SEMATIC_K8S_NAMESPACE, else the pod's own namespace in a cluster, else the kube context's, else default."""
    if os.environ.get(NAMESPACE_ENV):
        return os.environ[NAMESPACE_ENV]
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    if os.path.exists(path):
        with open(path) as f:
            return f.read().strip() or "default"
    try:
        from kubernetes import config

        _, context = config.list_kube_config_contexts()
        return (context or {}).get("context", {}).get("namespace") or "default"
    except Exception:  # noqa: BLE001 - no kube config: the default namespace
        return "default"


def api_message(e: ApiException) -> str:
    """The API server's own words for a refused call."""
    if not e.body:
        return str(e.reason or e)
    try:
        return json.loads(e.body).get("message") or str(e.reason)
    except Exception:  # noqa: BLE001
        return str(e.reason or e)


@dataclass(frozen=True)
class Denial:
    """An authorizer's refusal (RBAC): who may not do what, where (``namespace`` empty: at the cluster scope)."""

    user: str
    verb: str
    resource: str  # with its subresource, as in a Role's rules: pods/log
    group: str
    namespace: str

    def __str__(self) -> str:
        return f'{self.verb} on {self.resource} in API group "{self.group}"'


# The API server's words for an authorizer's refusal (apiserver's responsewriters.Forbidden, inside apimachinery's
# NewForbidden): '<resource>.<group>[ "<name>"] is forbidden: User "<user>" cannot <verb> resource "<resource>"
# in API group "<group>" in the namespace "<ns>"' (or "at the cluster scope"). Refusals by admission (an exceeded
# quota, Pod Security, a webhook's denial) say something else after "is forbidden: ".
_DENIED = re.compile(r'^(?:\S+(?: "[^"]*")? is )?forbidden: User "(?P<user>[^"]*)" cannot (?P<verb>\S+) resource '
                     r'"(?P<resource>[^"]*)" in API group "(?P<group>[^"]*)" '
                     r'(?:in the namespace "(?P<ns>[^"]*)"|at the cluster scope)')


def denial(e: ApiException) -> Denial | None:
    """The authorizer's refusal ``e`` is (a 403 Status, reason Forbidden, whose message and details name the same
    resource), else None: a 403 from admission, a webhook or anything else is not one."""
    if e.status != 403 or not e.body:
        return None
    try:
        status = json.loads(e.body)
    except ValueError:
        return None
    if not isinstance(status, dict) or status.get("reason") != "Forbidden":
        return None
    m = _DENIED.match(str(status.get("message") or ""))
    details = status.get("details")
    if m is None or not isinstance(details, dict):
        return None
    if (details.get("kind"), details.get("group") or "") != (m["resource"].split("/")[0], m["group"]):
        return None
    return Denial(m["user"], m["verb"], m["resource"], m["group"], m["ns"] or "")


def refused(e: ApiException, doing: str, namespace: str) -> ApiException | KubernetesForbidden | KubernetesUnauthorized:
    """The driver's refusal at ``doing`` in ``namespace``, in plain words: 403, which it meets again however often
    it tries, with the Role it needs; 401, its token refused (a restarted driver has a fresh one); else ``e``."""
    if e.status == 401:
        return KubernetesUnauthorized.refusing(doing, namespace, api_message(e))
    if e.status != 403:
        return e
    denied = denial(e)
    lacks = f" it lacks {denied};" if denied is not None else ""
    return KubernetesForbidden(
        f"the Kubernetes API refuses to let this driver {doing} in namespace {namespace} ({e.status}: "
        f"{api_message(e)});{lacks} give its ServiceAccount a Role that allows create, get, list, watch and "
        f"delete on jobs, list, watch and delete on pods, and create and delete on secrets there (the chart's "
        f"driver Role does: "
        f"runs.rbac.create=true, drivers running as runs.driverServiceAccount.name)")


RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


def retryable(e: BaseException) -> bool:
    """429 and 5xx answers, broken connections and calls never answered are worth another try; 4xx answers are not."""
    if isinstance(e, ApiException):
        return e.status in RETRY_STATUS or e.status == 0
    return isinstance(e, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, KubernetesUnanswered))


def lasting_refusal(e: BaseException) -> bool:
    """A 4xx answer that asking again soon will not change (a Role granted or a token renewed later may): 401, 403,
    405 ... Not 404 (the object's own answer), nor those that may pass: 400 (an object's state: the log of a container
    not started yet), 408, 409, 410, 429."""
    return isinstance(e, ApiException) and 400 <= (e.status or 0) < 500 and e.status not in (
        400, 404, 408, 409, 410, 429)


def timed_out(e: BaseException) -> bool:
    """The call went unanswered past its deadline (to connect, or for the answer)."""
    if isinstance(e, urllib3.exceptions.MaxRetryError):
        return e.reason is not None and timed_out(e.reason)
    return isinstance(e, (urllib3.exceptions.TimeoutError, TimeoutError))


def _read_deadline(deadline: Any) -> float | None:
    """The seconds a call given ``_request_timeout=deadline`` waits for its answer (None: not known)."""
    if isinstance(deadline, (int, float)):
        return float(deadline)
    if isinstance(deadline, tuple) and len(deadline) == 2:
        return float(deadline[1])
    return None


def unanswered(fn: Callable[..., Any], tries: int, e: BaseException, deadline: Any = None) -> KubernetesUnanswered:
    """The error, in plain words, of a call ``fn`` to the API server that went unanswered ``tries`` times (within
    its ``deadline``, else its client's: :func:`make_api_client`'s), or whose connection failed at once (refused)."""
    api = getattr(getattr(fn, "__self__", None), "api_client", None)
    host = getattr(getattr(api, "configuration", None), "host", None)
    name = getattr(fn, "__name__", "a call")
    count = f"{tries} {'try' if tries == 1 else 'tries'}"
    cause = _unreachable(e)
    if cause is not None:
        return KubernetesUnanswered(
            f"the Kubernetes API{f' at {host}' if host else ''} could not be reached ({count}): {name} ({cause}); "
            f"check that it is up and that this is its address (${KUBE_HOST_ENV}, the kubeconfig)")
    seconds = _read_deadline(deadline if deadline is not None else getattr(api, "deadline", None))
    within = f"within {seconds:g} s" if seconds is not None else "in time"
    return KubernetesUnanswered(
        f"the Kubernetes API{f' at {host}' if host else ''} did not answer {within} "
        f"({count}): {name} ({type(e).__name__}); a network partition, or a load "
        f"balancer or proxy that stopped forwarding: check the way from here to it (${KUBE_TIMEOUT_ENV} sets the "
        f"deadline)")


def _unreachable(e: BaseException) -> str | None:
    """What failed at once of a connection that was never made (refused, no route, a name not found: urllib3's
    NewConnectionError, a ConnectTimeoutError by class only, not by time), as the system said it; None otherwise."""
    reason = e.reason if isinstance(e, urllib3.exceptions.MaxRetryError) else e
    if not isinstance(reason, urllib3.exceptions.NewConnectionError):
        return None
    return str(reason).rpartition("Failed to establish a new connection: ")[2] or type(reason).__name__


def _retry_after(e: BaseException) -> float | None:
    headers = getattr(e, "headers", None) or {}
    try:
        value = headers.get("Retry-After") or headers.get("retry-after")
        return float(value) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


@dataclass
class Backoff:
    """Exponential backoff with jitter: ``base`` * 2^n, capped, for at most ``attempts`` tries. Its pauses
    (``sleep``) are retries' (:func:`~sematic_k8s.retries.pause`): ended on a thread whose retries are stopped."""

    base: float = 0.2
    cap: float = 10.0
    attempts: int = 8
    sleep: Callable[[float], None] = pause

    def delay(self, n: int, e: BaseException | None = None) -> float:
        hinted = _retry_after(e) if e is not None else None
        if hinted is not None:
            return min(hinted, self.cap)
        return min(self.cap, self.base * 2**n) * (0.5 + random.random() / 2)


def _client_stop(fn: Callable[..., Any]) -> Stop | None:
    """The stop of the client ``fn`` (an API's method) calls through (:func:`make_api_client`'s), if any."""
    stop = getattr(getattr(getattr(fn, "__self__", None), "api_client", None), "stop", None)
    return stop if isinstance(stop, Stop) else None


def _pause(backoff: Backoff, seconds: float, stop: Stop | None, name: str) -> None:
    """``backoff``'s pause before the next try of ``name``; a client's ``stop`` set ends it at once (the retries'
    pause waits on it: :func:`~sematic_k8s.retries.stopped_by`), :class:`CallStopped`."""
    if stop is None:
        backoff.sleep(seconds)
        return
    try:
        with stopped_by(stop):
            backoff.sleep(seconds)
    except RetriesStopped:
        raise CallStopped(f"the Kubernetes API call {name}, paused before its next try") from None


def api_call(fn: Callable[..., T], *args: Any, backoff: Backoff | None = None, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, retried with backoff on 429, 5xx and connection errors, and on calls that went
    unanswered past their deadline, :data:`TIMEOUT_TRIES` times at most (then :class:`KubernetesUnanswered`). On a
    thread whose retries are stopped (:func:`~sematic_k8s.retries.stopped_by`: its owner closed), a failure is neither
    said nor tried again, and a pause between tries ends: :class:`~sematic_k8s.retries.RetriesStopped`; through a
    client made with a stop (:func:`make_api_client`), set, a pause ends too: :class:`CallStopped`."""
    backoff = backoff or Backoff()
    stop = _client_stop(fn)
    timeouts = 0
    for n in range(backoff.attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            check_stopped()
            timeouts = timeouts + 1 if timed_out(e) else 0
            if timeouts and (timeouts >= TIMEOUT_TRIES or n == backoff.attempts - 1):
                raise unanswered(fn, timeouts, e, kwargs.get("_request_timeout")) from e
            if not retryable(e) or n == backoff.attempts - 1:
                raise
            wait = backoff.delay(n, e)
            name = getattr(fn, "__name__", str(fn))
            log.warning("kubernetes API %s failed (%s); retrying in %.2fs", name,
                        getattr(e, "status", None) or type(e).__name__, wait)
            _pause(backoff, wait, stop, name)
    raise AssertionError("unreachable")


# The answer of a list as its objects' metadata only (https://kubernetes.io/docs/reference/using-api/api-concepts/
# #receiving-resources-as-tables: a PartialObjectMetadataList): a Secret's data is never sent.
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


def log_text(resp: Any) -> str:  # noqa: ANN401 - urllib3's response
    """A pod log read with ``_preload_content=False`` (``resp``), as text: a byte not UTF-8 as U+FFFD (the official
    client's own decode is strict: one such byte, and every line was lost)."""
    return bytes(resp.data or b"").decode(errors="replace")


def list_metadata(list_fn: Callable[..., Any], namespace: str, selector: str, limit: int, token: str | None,
                  backoff: Backoff | None = None) -> dict[str, Any]:
    """One page (``limit`` at most, the next after ``token``) of the objects ``selector`` picks in ``namespace`` by
    ``list_fn`` (a ``list_namespaced_*`` of the client), their metadata only, as the API server's JSON: a
    PartialObjectMetadataList, its ``items`` each with ``metadata`` alone."""
    kwargs: dict[str, Any] = {"label_selector": selector, "limit": limit, "_preload_content": False,
                              "_headers": {"Accept": METADATA_LIST}}
    if token:
        kwargs["_continue"] = token
    resp: Any = api_call(list_fn, namespace, backoff=backoff, **kwargs)
    return json.loads(resp.data)


class TokenBucket:
    """At most ``rate`` acquisitions per second on average, bursts of ``burst``; thread-safe."""

    def __init__(self, rate: float, burst: int | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1, int(rate)))
        self.tokens = self.burst
        self.clock, self.sleep = clock, sleep
        self.stamp = clock()
        self.lock = threading.Lock()
        self.waited = 0.0  # total seconds callers slept (reported by benchmarks)

    def acquire(self) -> None:
        if self.rate <= 0:
            return
        with self.lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            self.tokens -= 1
            wait = -self.tokens / self.rate if self.tokens < 0 else 0.0
        if wait > 0:
            self.waited += wait
            self.sleep(wait)


class NamespacedApi:
    """The calls a driver's executor makes about its workers in ``namespace``, each retried with ``backoff`` (the
    watches' lists aside: :func:`sematic_k8s.k8s.watch.watch_workers`). The chart's driver Role grants exactly
    these (tests/k8s/test_helm.py reads them here)."""

    def __init__(self, api: client.ApiClient, namespace: str, backoff: Backoff) -> None:
        self.namespace, self.backoff = namespace, backoff
        self.batch, self.core = client.BatchV1Api(api), client.CoreV1Api(api)

    def create_job(self, body: dict[str, Any], backoff: Backoff) -> str | None:
        """Create the Job; its uid."""
        job = api_call(self.batch.create_namespaced_job, self.namespace, body, backoff=backoff)
        meta = getattr(job, "metadata", None)
        return meta.uid if meta is not None else None

    def read_job(self, name: str, backoff: Backoff | None = None) -> Any:
        return api_call(self.batch.read_namespaced_job, name, self.namespace, backoff=backoff or self.backoff)

    def list_jobs(self, selector: str, limit: int, token: str | None) -> dict[str, Any]:
        """One page of the Jobs ``selector`` picks (the next after ``token``), as the API server's JSON."""
        kwargs: dict[str, Any] = {"label_selector": selector, "limit": limit, "_preload_content": False}
        if token:
            kwargs["_continue"] = token
        resp: Any = api_call(self.batch.list_namespaced_job, self.namespace, backoff=self.backoff, **kwargs)
        return json.loads(resp.data)

    def delete_job(self, name: str) -> None:
        """Delete the Job, its pod in the background."""
        api_call(self.batch.delete_namespaced_job, name, self.namespace, propagation_policy="Background",
                 backoff=self.backoff)

    def create_secret(self, body: dict[str, Any], backoff: Backoff) -> None:
        """Create the Secret (a worker's task). The driver may create and delete Secrets, never read them: it gets no
        other resolution's token, and nothing here reads one back (a patch or a replace answers with its data)."""
        api_call(self.core.create_namespaced_secret, self.namespace, body, backoff=backoff, _preload_content=False)

    def delete_secret(self, name: str) -> None:
        """Delete the Secret (its answer, a Status, is not read)."""
        api_call(self.core.delete_namespaced_secret, name, self.namespace, backoff=self.backoff,
                 _preload_content=False)

    def list_pods(self, selector: str) -> list[dict[str, Any]]:
        """The pods ``selector`` picks (the API server's JSON; a few, so not paged)."""
        resp: Any = api_call(self.core.list_namespaced_pod, self.namespace, label_selector=selector,
                             _preload_content=False, backoff=self.backoff)
        return json.loads(resp.data).get("items") or []

    def list_pod_page(self, selector: str, limit: int, token: str | None) -> dict[str, Any]:
        """One page of the pods ``selector`` picks (the next after ``token``; the first from the watch cache,
        ``resourceVersion=0``: possibly a little old), as the API server's JSON."""
        kwargs: dict[str, Any] = {"label_selector": selector, "limit": limit, "_preload_content": False}
        if token:
            kwargs["_continue"] = token
        else:
            kwargs.update(resource_version="0", resource_version_match="NotOlderThan")
        resp: Any = api_call(self.core.list_namespaced_pod, self.namespace, backoff=self.backoff, **kwargs)
        return json.loads(resp.data)

    def delete_pod(self, name: str, uid: str | None) -> None:
        """Delete the pod ``name`` if it is still the one with ``uid`` (409 if it is not); None: the caller's own pod
        (no other pod can have its name while it runs in it)."""
        preconditions = None if uid is None else client.V1Preconditions(uid=uid)
        api_call(self.core.delete_namespaced_pod, name, self.namespace, backoff=self.backoff,
                 body=client.V1DeleteOptions(preconditions=preconditions))

    def pod_log(self, pod: str, container: str, tail_lines: int) -> str:
        """The last ``tail_lines`` lines of ``container`` in ``pod`` (a few tries only: the pod may be gone), a byte
        not UTF-8 as U+FFFD (the official client decodes strictly: one such byte lost every line)."""
        return log_text(api_call(self.core.read_namespaced_pod_log, pod, self.namespace, container=container,
                                 tail_lines=tail_lines, _preload_content=False, _request_timeout=10,
                                 backoff=Backoff(attempts=3)))

    def warning_events(self, name: str) -> list[dict[str, Any]]:
        """The Warning Events about the object called ``name``, as the API server's JSON."""
        resp: Any = api_call(self.core.list_namespaced_event, self.namespace, _preload_content=False,
                             field_selector=f"involvedObject.name={name},type=Warning", backoff=self.backoff)
        return json.loads(resp.data).get("items") or []
