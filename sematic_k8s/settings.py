"""Every environment variable sematic-k8s reads or sets, named once, and where the embedded mode keeps its data.

Other modules refer to these constants, never to the names themselves (a test checks it). Values are read
where they are used, so a test or a driver can change the environment before each call.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

PREFIX = "SEMATIC_K8S_"

# -- the embedded mode -------------------------------------------------------------------------------------
HOME_ENV = "SEMATIC_K8S_HOME"  # the data directory: SQLite database, artifacts, logs (default ~/.sematic_k8s)
DB_URL_ENV = "SEMATIC_K8S_DB_URL"  # a SQLAlchemy URL for the metadata (default: SQLite in the data directory)

# -- the server, for resolvers, drivers and the CLI ------------------------------------------------------
SERVER_ENV = "SEMATIC_K8S_SERVER"  # the sematic-k8s server's base URL: record there instead of the local database
API_KEY_ENV = "SEMATIC_K8S_API_KEY"  # the API key sent to the server (X-API-Key)
API_KEY_FILE_ENV = "SEMATIC_K8S_API_KEY_FILE"  # a file holding it instead (drivers: their resolution's token)
SERVER_AUTH_ENV = "SEMATIC_K8S_SERVER_AUTH"  # a driver's "user:password" for the server URL (kept out of the URL)
SERVER_AUTH_FILE_ENV = "SEMATIC_K8S_SERVER_AUTH_FILE"  # a file holding it instead (drivers in Docker containers)
# S3 keys (boto's names); a Docker driver gets each as a file, named by $SEMATIC_K8S_<name>_FILE (storage_keys)
STORAGE_KEY_ENVS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
LOG_LEVEL_ENV = "SEMATIC_K8S_LOG_LEVEL"  # the server's log level (uvicorn's names; default info)
ACTIONS_BY_ENV = "SEMATIC_K8S_ACTIONS_BY"  # the server's --actions-by: team (default) or owner

# -- artifact storage ------------------------------------------------------------------------------------
STORAGE_ENV = "SEMATIC_K8S_STORAGE"  # artifact storage URL for cloud runs and the server (s3://bucket/prefix)
STORAGE_ALLOW_ENV = "SEMATIC_K8S_STORAGE_ALLOW"  # more storages the server may read (comma-separated URLs)
SERVER_PARAMS_ENV = "SEMATIC_K8S_SERVER_PARAMS"  # set by `server --workers N` for its processes: the parent's settings
S3_PREFIX_ENVS = "SEMATIC_K8S_S3_"  # the start of every S3 setting below (passed on to drivers and workers)
S3_BUCKET_ENV = "SEMATIC_K8S_S3_BUCKET"  # S3Storage.from_env's bucket
S3_KEY_PREFIX_ENV = "SEMATIC_K8S_S3_PREFIX"  # S3Storage.from_env's key prefix
S3_ENDPOINT_ENV = "SEMATIC_K8S_S3_ENDPOINT"  # a non-AWS S3 endpoint (MinIO, moto); before AWS_ENDPOINT_URL(_S3)
S3_REGION_ENV = "SEMATIC_K8S_S3_REGION"  # the S3 region; before AWS_REGION / AWS_DEFAULT_REGION

# -- images (the CloudResolver) -----------------------------------------------------------------------------
REGISTRY_ENV = "SEMATIC_K8S_REGISTRY"  # where the CloudResolver pushes images (e.g. 127.0.0.1:5000/pipelines)
BASE_IMAGE_ENV = "SEMATIC_K8S_BASE_IMAGE"  # the base image of user images (default python:3.11-slim)
WHEEL_CACHE_ENV = "SEMATIC_K8S_WHEEL_CACHE"  # the host's cache of wheels fetched for image builds
CODE_DIR_ENV = "SEMATIC_K8S_CODE_DIR"  # set in images: where the user's project was copied
SOURCE_MAP_ENV = "SEMATIC_K8S_SOURCE_MAP"  # "HOST_ROOT=IMAGE_ROOT": where recorded source files are in an image

# -- drivers and workers ----------------------------------------------------------------------------------
DRIVER_ENV = "SEMATIC_K8S_DRIVER"  # a driver's DriverSpec (JSON)
TASK_ENV = "SEMATIC_K8S_TASK"  # a worker's TaskSpec (JSON): only one that carries no presigned URL
TASK_FILE_ENV = "SEMATIC_K8S_TASK_FILE"  # a file holding it instead, "-" for stdin (containers, pods, processes)
PARENT_PID_ENV = "SEMATIC_K8S_PARENT_PID"  # a worker process's driver: it ends itself when that one dies
SAY_STORED_ENV = "SEMATIC_K8S_SAY_STORED"  # set ("1") for a worker whose stdout is followed: it prints when it stored
UNSTARTED_DRIVER_GRACE_ENV = "SEMATIC_K8S_UNSTARTED_DRIVER_GRACE"  # s a Docker driver stays created, unstarted (300)

# -- Kubernetes ---------------------------------------------------------------------------------------------
KUBE_HOST_ENV = "SEMATIC_K8S_KUBE_HOST"  # an API server URL without credentials (tests, kubectl proxy)
NAMESPACE_ENV = "SEMATIC_K8S_NAMESPACE"  # the run namespace (set in drivers by the downward API)
POD_NAME_ENV = "SEMATIC_K8S_POD_NAME"  # the driver's pod name (downward API)
DRIVER_JOB_ENV = "SEMATIC_K8S_DRIVER_JOB"  # the driver's Job name, owner of its workers' Jobs (downward API)
DRIVER_JOB_UID_ENV = "SEMATIC_K8S_DRIVER_JOB_UID"  # that Job's uid (downward API)
CONFIG_MAP_ENV = "SEMATIC_K8S_CONFIG_MAP"  # the chart's ConfigMap of in-cluster settings (default sematic-k8s)
SERVICE_ACCOUNT_ENV = "SEMATIC_K8S_SERVICE_ACCOUNT"  # the drivers' ServiceAccount (also a ConfigMap key)
WORKER_SERVICE_ACCOUNT_ENV = "SEMATIC_K8S_WORKER_SERVICE_ACCOUNT"  # the workers' ServiceAccount (also a key)
STORAGE_SECRET_ENV = "SEMATIC_K8S_STORAGE_SECRET"  # the Secret holding S3 credentials for pods (also a key)
DRIVER_START_GRACE_ENV = "SEMATIC_K8S_DRIVER_START_GRACE"  # seconds a driver pod may stay uncreated/unstarted (60)
TOKEN_SECRET_GRACE_ENV = "SEMATIC_K8S_TOKEN_SECRET_GRACE"  # seconds an unowned token Secret is left (600)
TOKEN_SWEEP_NAMESPACES_ENV = "SEMATIC_K8S_TOKEN_SWEEP_NAMESPACES"  # more namespaces the server sweeps (comma-separated)
KUBE_TIMEOUT_ENV = "SEMATIC_K8S_KUBE_TIMEOUT"  # seconds a Kubernetes API call may go unanswered (60; connect: 10)

# -- faults (DESIGN.md "Faults") ----------------------------------------------------------------------------
RETRY_WINDOW_ENV = "SEMATIC_K8S_RETRY_WINDOW"  # seconds clients retry an unreachable server or storage (default 120)
HEARTBEAT_INTERVAL_ENV = "SEMATIC_K8S_HEARTBEAT_INTERVAL"  # seconds between a resolving process's heartbeats (5)
HEARTBEAT_TIMEOUT_ENV = "SEMATIC_K8S_HEARTBEAT_TIMEOUT"  # seconds of silence after which a resolution is dead (60)
DB_LOCK_TIMEOUT_ENV = "SEMATIC_K8S_DB_LOCK_TIMEOUT"  # seconds a server request waits for a PostgreSQL lock (20)
DB_POOL_SIZE_ENV = "SEMATIC_K8S_DB_POOL_SIZE"  # PostgreSQL connections a server process holds at most (50)
DB_POOL_TIMEOUT_ENV = "SEMATIC_K8S_DB_POOL_TIMEOUT"  # seconds a server request waits for one of them (20)
DB_POOLER_ENV = "SEMATIC_K8S_DB_POOLER"  # what the server's PostgreSQL URL reaches: none (itself) or transaction

DEFAULT_RETRY_WINDOW = 120.0
DEFAULT_HEARTBEAT_INTERVAL = 5.0
DEFAULT_HEARTBEAT_TIMEOUT = 60.0
DEFAULT_DB_POOL_SIZE = 50
CLIENT_REQUEST_TIMEOUT = 60.0  # seconds the HTTP store waits for the server's answer (store.http), then sends again
DEFAULT_DB_POOL_TIMEOUT = 20.0  # below CLIENT_REQUEST_TIMEOUT: the 503 reaches a client that still waits for it
DEFAULT_DB_LOCK_TIMEOUT = 20.0  # below clients' 60 s request timeout: the server answers before they give up
DB_POOLERS = ("none", "transaction")  # $SEMATIC_K8S_DB_POOLER's: own sessions; PgBouncer's transaction pooling

# What a driver passes on to its workers (storage settings, the source map). Of the AWS variables only the endpoint
# and region: never a key (STORAGE_KEY_ENVS: workers with presigned URLs need none; pods of a storage that makes no
# URLs read the storage Secret),
# nor a pod's identity (EKS IRSA: AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE; Pod Identity:
# AWS_CONTAINER_CREDENTIALS_FULL_URI, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE; profiles and config files), which is the
# cluster's or the machine's: another pod has its own, or none.
WORKER_PASS_THROUGH = (SOURCE_MAP_ENV, S3_PREFIX_ENVS, RETRY_WINDOW_ENV)
AWS_PASS_THROUGH = frozenset({"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"})

# Every secret a driver may be given -> the variable naming a file that holds it instead. Never a plain variable of
# a container or pod: the Docker launcher writes each to a 0400 file (launchers.docker), a driver Job reads each from
# a Secret (k8s.manifests.secret_env); the reading side takes either (_secret).
SECRET_FILE_ENVS = {API_KEY_ENV: API_KEY_FILE_ENV, SERVER_AUTH_ENV: SERVER_AUTH_FILE_ENV,
                    **{name: f"SEMATIC_K8S_{name}_FILE" for name in STORAGE_KEY_ENVS}}


def home(override: str | os.PathLike[str] | None = None, *, create: bool = True) -> Path:
    """The data directory: ``override``, else $SEMATIC_K8S_HOME, else ~/.sematic_k8s (created if missing, unless
    ``create`` is False: a read). An OSError of the same kind saying what to do when it is a file, or cannot be
    created. Absolute, as the directory it names was when asked: a func that changes the process's directory (an
    inline func's ``os.chdir``) moves none of the resolution's files."""
    path = Path(override or os.environ.get(HOME_ENV) or Path.home() / ".sematic_k8s").expanduser().absolute()
    if not create:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise type(e)(f"cannot use {path} as the data directory ({e.strerror or e}): pass --home DIR or set "
                      f"${HOME_ENV} to a directory you can write (a resolver: home=DIR)") from None
    return path


def db_url(home_dir: Path) -> str:
    """The metadata database: $SEMATIC_K8S_DB_URL, else a SQLite file in the home directory."""
    return os.environ.get(DB_URL_ENV) or f"sqlite:///{home_dir / 'db.sqlite3'}"


def api_key() -> str | None:
    """The credential for the server: $SEMATIC_K8S_API_KEY, else the contents of $SEMATIC_K8S_API_KEY_FILE."""
    return _secret(API_KEY_ENV, API_KEY_FILE_ENV, "API key")


def server_url() -> str | None:
    """$SEMATIC_K8S_SERVER, with the user info a driver was given apart ($SEMATIC_K8S_SERVER_AUTH, or the file
    $SEMATIC_K8S_SERVER_AUTH_FILE: see :func:`split_user_info`) put back, when the URL has none of its own."""
    url = os.environ.get(SERVER_ENV) or None
    auth = _secret(SERVER_AUTH_ENV, SERVER_AUTH_FILE_ENV, "server user info")
    if not url or not auth:
        return url
    parts = urlsplit(url)
    return url if "@" in parts.netloc else urlunsplit(parts._replace(netloc=f"{auth}@{parts.netloc}"))


def check_server_url(url: str, named: str = "server {url}") -> None:
    """Refuse ``url`` unless it is a server's base URL, ``http(s)://[USER:PASSWORD@]HOST[:PORT][/PATH]``, with a
    one-line BadSetting saying what is wrong with it, rather than its first request (a port out of range was
    "connection refused" there). ``named`` says how to call it, ``{url}`` standing for it (its password not shown)."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    host_port = netloc.rpartition("@")[2]
    said = named.format(url=repr(f"{scheme}{sep}{'***@' if '@' in netloc else ''}{host_port}{slash}{path}"))
    port = (host_port.partition("]")[2] if host_port.startswith("[") else host_port).partition(":")[2]  # [IPv6]:PORT
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or is out of range
    except ValueError:
        if port.isdigit():
            raise BadSetting(f"{said} has port {port}, not one of 1-65535: use http://HOST:PORT") from None
        if port:
            raise BadSetting(f"{said} has a port that is not a number: use http://HOST:PORT") from None
        parts = None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query
            or parts.fragment or any(c.isspace() for c in url)):
        raise BadSetting(f"{said} is not a server URL: use http://HOST:PORT")
    if parts.port == 0:
        raise BadSetting(f"{said} has port 0, not one of 1-65535: use http://HOST:PORT")


def split_user_info(url: str) -> tuple[str, str | None]:
    """``http://user:password@host:port/path`` -> (``http://host:port/path``, ``user:password``), as written
    (percent-encoded); (url, None) for a URL without user info. A URL's password never goes into an environment
    in plain: drivers are given it apart, as a secret."""
    parts = urlsplit(url)
    auth, at, netloc = parts.netloc.rpartition("@")
    return (urlunsplit(parts._replace(netloc=netloc)), auth) if at else (url, None)


def _secret(name: str, file_name: str, what: str) -> str | None:
    """$``name``, else the contents of the file $``file_name``; None when neither is set. BadSetting, in one line,
    for a file that cannot be read as text (missing, a directory, no permission, binary) and for a value holding a
    control character (a key pasted with a line break: no header can carry it)."""
    value = os.environ.get(name)
    if value:
        return _printable(value, f"${name}", what)
    path = os.environ.get(file_name)
    if path:
        try:
            text = Path(path).read_text().strip()
        except OSError as e:
            raise BadSetting(f"cannot read the {what} file ${file_name}={path} ({e.strerror or e}): give it the path "
                             f"of a readable file holding the {what}") from None
        except UnicodeDecodeError:
            raise BadSetting(f"the {what} file ${file_name}={path} is not text: give it the path of a file holding "
                             f"the {what} alone") from None
        return _printable(text, f"the {what} file ${file_name}={path}", what) if text else None
    return None


def _printable(value: str, named: str, what: str) -> str:
    """``value`` unless it holds a control character, refused by a BadSetting naming where it came from (``named``)
    and never showing the secret itself."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise BadSetting(f"{named} holds a control character (a line break?): give the {what} alone, on one line")
    return value


def env(name: str, default: str | None = None) -> str | None:
    """The variable's value; ``default`` when it is unset or empty."""
    return os.environ.get(name) or default


def storage_keys() -> dict[str, str]:
    """The S3 keys given to this process (boto's names -> values): each from its variable, else from the file
    $SEMATIC_K8S_<name>_FILE names (a Docker driver's); {} when none is (boto's chain then: profiles, roles)."""
    found = ((name, _secret(name, SECRET_FILE_ENVS[name], f"${name}")) for name in STORAGE_KEY_ENVS)
    return {name: value for name, value in found if value}


def worker_env() -> dict[str, str]:
    """The part of this process's environment that workers need (storage settings, the source map): what a driver
    passes on. Never a key nor a pod identity's variables (see AWS_PASS_THROUGH)."""
    return {k: v for k, v in os.environ.items() if k.startswith(WORKER_PASS_THROUGH) or k in AWS_PASS_THROUGH}


class BadSetting(ValueError):
    """A setting (an environment variable, a server URL) whose value cannot be right; the message names it and what it
    takes. Here, not in :mod:`sematic_k8s.errors`: settings and errors are independent layers."""


def seconds(name: str, default: float, *, above_zero: bool = False) -> float:
    """A duration in seconds from the variable ``name``; ``default`` when it is unset or empty; inf and nan refused
    (inf naming the default to set instead). ``above_zero``: 0 refused too (a period: a thread beating every 0 s would
    spin), naming the default to set instead."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadSetting(f"${name} must be a number of seconds, got {raw!r}") from None
    if above_zero and not value > 0:  # nan too
        raise BadSetting(f"${name} must be a number of seconds > 0, got {raw!r}: set it to one (the default is "
                         f"{default:g}) or unset it")
    if not value >= 0:  # nan and -inf too
        raise BadSetting(f"${name} must be a number of seconds >= 0, got {raw!r}")
    if not math.isfinite(value):  # a wait of inf s overflows (OverflowError); "for ever" is none of these
        raise BadSetting(f"${name} must be a finite number of seconds, got {raw!r}: set one (the default is "
                         f"{default:g}) or unset it")
    return value


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # uvicorn's, quietest first


def log_level() -> str:
    """The server's log level ($SEMATIC_K8S_LOG_LEVEL: one of uvicorn's names, in any case; default info). Another
    value is refused naming them (uvicorn's own check was a KeyError after the server's banner)."""
    raw = os.environ.get(LOG_LEVEL_ENV, "")
    level = raw.strip().lower() or "info"
    if level not in LOG_LEVELS:
        raise BadSetting(f"${LOG_LEVEL_ENV} must be one of {', '.join(LOG_LEVELS)}, got {raw!r}: set one of them or "
                         "unset it (the default is info)")
    return level


def retry_window() -> float:
    """How long clients keep retrying an unreachable server or storage ($SEMATIC_K8S_RETRY_WINDOW)."""
    return seconds(RETRY_WINDOW_ENV, DEFAULT_RETRY_WINDOW)


def heartbeat_interval() -> float:
    """Seconds between a resolving process's heartbeats ($SEMATIC_K8S_HEARTBEAT_INTERVAL; 0 refused: a period)."""
    return seconds(HEARTBEAT_INTERVAL_ENV, DEFAULT_HEARTBEAT_INTERVAL, above_zero=True)


def heartbeat_timeout() -> float:
    """Seconds without a heartbeat after which a resolution's process counts as dead
    ($SEMATIC_K8S_HEARTBEAT_TIMEOUT; 0 refused: every live one would be dead, and a claim holder's beat, a quarter of
    it at most, would spin)."""
    return seconds(HEARTBEAT_TIMEOUT_ENV, DEFAULT_HEARTBEAT_TIMEOUT, above_zero=True)


def db_lock_timeout() -> float:
    """Seconds a server's request waits for a lock another session holds on its PostgreSQL database before it is
    answered 503 ($SEMATIC_K8S_DB_LOCK_TIMEOUT; 0: as long as it is held)."""
    return seconds(DB_LOCK_TIMEOUT_ENV, DEFAULT_DB_LOCK_TIMEOUT)


def db_pool_size() -> int:
    """PostgreSQL connections a server process holds at most ($SEMATIC_K8S_DB_POOL_SIZE, a whole number >= 1)."""
    raw = os.environ.get(DB_POOL_SIZE_ENV)
    if not raw:
        return DEFAULT_DB_POOL_SIZE
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise BadSetting(f"${DB_POOL_SIZE_ENV} must be a whole number of connections >= 1, got {raw!r}: set it to "
                         f"one (the default is {DEFAULT_DB_POOL_SIZE}) or unset it")
    return value


def db_pooler() -> str:
    """What the server's PostgreSQL URL reaches ($SEMATIC_K8S_DB_POOLER): ``none`` (unset: PostgreSQL itself, or a
    session-pooling PgBouncer; the server's sessions are its own) or ``transaction`` (PgBouncer's transaction pooling:
    no session state, each transaction bounded on its own; :mod:`sematic_k8s.store.lockwait`); anything else refused."""
    raw = os.environ.get(DB_POOLER_ENV)
    if not raw:
        return DB_POOLERS[0]
    if raw not in DB_POOLERS:
        raise BadSetting(f"${DB_POOLER_ENV} must be 'none' (PostgreSQL itself, or a session-pooling PgBouncer) or "
                         f"'transaction' (PgBouncer's transaction pooling), got {raw!r}: set one of those or unset it")
    return raw


def db_pool_timeout() -> float:
    """Seconds a server request waits for one of its process's PostgreSQL connections, all in use by other requests,
    before it is answered 503 ($SEMATIC_K8S_DB_POOL_TIMEOUT, 20; below :data:`CLIENT_REQUEST_TIMEOUT`, else
    refused: the 503 would come after the client gave up and sent the request again)."""
    value = seconds(DB_POOL_TIMEOUT_ENV, DEFAULT_DB_POOL_TIMEOUT, above_zero=True)
    if value >= CLIENT_REQUEST_TIMEOUT:
        raise BadSetting(f"${DB_POOL_TIMEOUT_ENV} must be below {CLIENT_REQUEST_TIMEOUT:g} s, the clients' request "
                         f"timeout (its 503 would come after they gave up and sent the request again), got "
                         f"{os.environ.get(DB_POOL_TIMEOUT_ENV)!r}: set it lower (the default is "
                         f"{DEFAULT_DB_POOL_TIMEOUT:g}) or unset it")
    return value
