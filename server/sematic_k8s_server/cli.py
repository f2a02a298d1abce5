"""``sematic-k8s server`` and ``sematic-k8s api-keys``: click commands, registered on the main CLI with
:func:`register`. Server dependencies (FastAPI, uvicorn, Alembic) are imported only when used."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import click

from sematic_k8s import settings
from sematic_k8s.cli.errors import DEBUG, Group
from sematic_k8s.cli.options import FloatRange, HomeDir, IntRange
from sematic_k8s.cli.output import OutputFailed, emit, local_time, out
from sematic_k8s.errors import DatabaseUnopenable, StopsForAFix
from sematic_k8s.store import missing_sqlite_file, redacted_url, sqlite_file, unrecorded_sqlite
from sematic_k8s.version import install_command
from sematic_k8s_server.config import ACTIONS_BY, TEAM, UNOWNED

LOOPBACK_NAMES = ("localhost",)

db_url_option = click.option("--db-url", help=f"SQLAlchemy URL of the metadata database (default: "
                                              f"${settings.DB_URL_ENV}, else SQLite in the data directory).")
home_option = click.option("--home", "home_opt", type=HomeDir(),
                           help=f"Data directory (default: the CLI's --home, ${settings.HOME_ENV}, ~/.sematic_k8s).")


def _home(ctx: click.Context, home_opt: Path | None, *, create: bool = True) -> Path:
    try:
        return settings.home(home_opt or ctx.find_root().params.get("home"), create=create)
    except OSError as e:  # a file, or no right to create it: settings.home says what to do
        raise click.ClickException(str(e)) from None


def _db_url(home: Path, db_url: str | None) -> str:
    if db_url is not None and not db_url.strip():  # an unset variable in `--db-url "$URL"`: not the default, unsaid
        raise click.ClickException(f"--db-url is empty: give a SQLAlchemy URL, or leave --db-url out for "
                                   f"${settings.DB_URL_ENV} or the data directory's SQLite database")
    return db_url or settings.db_url(home)


def _keys_db_url(ctx: click.Context, home_opt: Path | None, db_url: str | None) -> str:
    """The database whose keys to list or revoke, never made by it: a SQLite file that is not there is one line."""
    url = _db_url(_home(ctx, home_opt, create=False), db_url)
    file = missing_sqlite_file(url)
    if file is not None:
        raise click.ClickException(f"the metadata database {file} does not exist: no API key was made there; check "
                                   f"--db-url, --home or ${settings.HOME_ENV}")
    if unrecorded_sqlite(url) is not None:  # empty, or another program's: left as it is (opening it makes tables)
        raise click.ClickException(f"{sqlite_file(url)} is not a sematic-k8s database: no API key was made there; "
                                   f"check --db-url, --home or ${settings.HOME_ENV}")
    return url


def _open_store(url: str, *, wait: float = 0):  # noqa: ANN202 - SqlStore, imported lazily
    """The server's database, opened (and migrated). One whose server does not answer yet (a PostgreSQL started with
    this server, restarting, failing over) is tried again every second for ``wait`` seconds, said once."""
    try:
        from sematic_k8s_server.db import open_store
    except ImportError as e:
        raise click.ClickException(f"the server needs its extra dependencies: {install_command('server')} ({e})"
                                   ) from None
    deadline, said = time.monotonic() + wait, False
    while True:
        try:
            return open_store(url)
        except DatabaseUnopenable as e:  # the server's own settings to check
            if e.unreachable and time.monotonic() < deadline:
                if not said:
                    click.echo(f"Waiting for the metadata database ({e.problem}); the server starts once it answers, "
                               f"or gives up after {wait:g} s (${settings.RETRY_WINDOW_ENV})", err=True)
                    said = True
                time.sleep(DATABASE_WAIT_STEP)
                continue
            if not e.in_settings:  # found, and its words say what to do (damaged, read-only)
                raise click.ClickException(str(e)) from None
            waited = f" (tried for {wait:g} s)" if said else ""
            raise click.ClickException(f"{e.problem}{waited}; check --db-url, ${settings.DB_URL_ENV} or --home (a "
                                       "directory this server may write)") from None
        except StopsForAFix as e:  # its own words say what to do (SchemaTooNew)
            raise click.ClickException(str(e)) from None
        except settings.BadSetting as e:  # $SEMATIC_K8S_DB_LOCK_TIMEOUT, $SEMATIC_K8S_DB_POOLER
            raise click.ClickException(str(e)) from None


DATABASE_WAIT_STEP = 1.0  # seconds between two tries of a database that does not answer yet


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=IntRange(1, 65535), default=8000, show_default=True)
@db_url_option
@click.option("--local", is_flag=True, help="Local mode, for this machine only (loopback): no API keys; "
              "state-changing requests need JSON and a same-origin Origin, and Host must be a loopback name.")
@click.option("--allow-docker", is_flag=True, help="Local development (loopback only): allow "
              "--rerun-launcher docker, which starts rerun drivers as containers on this machine (never "
              "with the Docker socket).")
@click.option("--rerun-launcher", type=click.Choice(["kubernetes", "docker"]), default=None,
              help="How this server starts reruns of cloud resolutions (default: it starts none).")
@click.option("--rerun-image-repository", "rerun_images", multiple=True, metavar="REPO",
              help="Allow reruns from images in this repository (or under it), e.g. registry.example.com/"
                   "pipelines; repeat for more. Reruns from any other image are refused.")
@click.option("--rerun-namespace", default=None, help="Namespace of rerun drivers' Jobs (default: "
              f"${settings.NAMESPACE_ENV}, else the server's own).")
@click.option("--self-url", metavar="URL", default=None,
              help="The URL drivers started for reruns reach this server at (the Helm chart gives its Service's "
                   "in-cluster address, http://NAME.NAMESPACE.svc:PORT); required with --rerun-launcher kubernetes. "
                   "Default: http://127.0.0.1:PORT, this machine only.")
@click.option("--rerun-concurrency", type=IntRange(1, 64), default=2, show_default=True,
              help="Reruns being started at once.")
@click.option("--rerun-queue", type=IntRange(0, 1000), default=8, show_default=True,
              help="Rerun requests waiting to start; more get 429.")
@click.option("--max-request-mb", type=FloatRange(0.01, 4096), default=32, show_default=True,
              help="Largest request body accepted; larger ones get 413 as soon as they exceed it.")
@click.option("--header-timeout", type=FloatRange(1, 3600), default=10, show_default=True,
              help="Seconds a client may take to send a request's headers, from its connection's opening or its "
                   "previous answer; then its connection is closed (an idle or slow client holds none).")
@click.option("--body-timeout", type=FloatRange(1, 86400), default=60, show_default=True,
              help="Seconds a client may take to send a request's body once its headers are in; then 408 and its "
                   "connection is closed, the request not applied.")
@click.option("--send-timeout", type=FloatRange(1, 86400), default=60, show_default=True,
              help="Seconds an answer waits for a client that reads none of it (a live-events stream to a client "
                   "that stopped reading); then its connection is cut.")
@click.option("--max-streams-per-key", type=IntRange(1, 1_000_000), default=64, show_default=True,
              help="Live-event streams one API key (in local mode: this machine) may hold open at once, per server "
                   "process; one more gets 429 (a dashboard tab then polls, and tries again later).")
@click.option("--token-max-hours", type=FloatRange(0.01, 24 * 365), default=24 * 7, show_default=True,
              help="Longest life of a resolution's token (it also ends when the resolution ends).")
@click.option("--shutdown-timeout", type=FloatRange(0, 3600), default=20, show_default=True,
              help="Seconds a stopping server (SIGTERM, Ctrl-C) gives the requests under way to finish before it "
                   "cuts them; live event streams end at once. Keep it below the time the process is given to stop "
                   "(Kubernetes' terminationGracePeriodSeconds, less a preStop delay).")
@click.option("--cache-trusted-key", "cache_trusted_keys", multiple=True, metavar="NAME",
              help="Let every key's cache look-ups reuse the outputs recorded by the API key named NAME (a service "
                   f"that fills the cache; repeat for more; {UNOWNED} for the runs recorded before owners were). "
                   "Otherwise a key reuses only its own: a cached output is loaded, and a pickle runs what it holds.")
@click.option("--actions-by", type=click.Choice(ACTIONS_BY), envvar=settings.ACTIONS_BY_ENV, default=TEAM,
              show_default=True, show_envvar=True,
              help="Whose resolutions a user key may cancel, re-run, continue, label and note: team: any; owner: only "
                   "those it recorded (an admin key: any; one recorded with no owner: admin keys only).")
@click.option("--workers", type=IntRange(1, 64), default=1, show_default=True,
              help="Server processes sharing the port (PostgreSQL only): one per core serves more requests; "
                   "live events reach every process through the database.")
@home_option
@click.pass_context
def server(ctx: click.Context, host: str, port: int, db_url: str | None, local: bool, allow_docker: bool,
           rerun_launcher: str | None, rerun_images: tuple[str, ...], rerun_namespace: str | None, self_url: str | None,
           rerun_concurrency: int, rerun_queue: int, max_request_mb: float, header_timeout: float, body_timeout: float,
           send_timeout: float, max_streams_per_key: int, token_max_hours: float, shutdown_timeout: float,
           cache_trusted_keys: tuple[str, ...], actions_by: str, workers: int, home_opt: Path | None) -> None:
    """Serve the REST API and the dashboard over the metadata database (migrated at startup).

    Artifacts and logs are read from $SEMATIC_K8S_STORAGE (e.g. s3://bucket/prefix) if set, else HOME/storage,
    and from the storages in $SEMATIC_K8S_STORAGE_ALLOW
    (comma-separated URLs) for cloud resolutions that recorded theirs there.
    """
    if not host.strip():  # an unset variable in `--host "$HOST"`: it would listen on every interface, unsaid
        raise click.ClickException(f"--host {host!r} is empty, which would listen on every interface: give an address, "
                                   "such as 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)")
    for flag, on in (("--local", local), ("--allow-docker", allow_docker)):
        if on and not _is_loopback(host):
            raise click.ClickException(f"{flag} is for this machine only, so the server may only listen on a "
                                       f"loopback address (127.0.0.1, ::1 or localhost), not {host}")
    if self_url is not None:  # as a driver's store will take it: a typo said here, not by each rerun's driver
        try:
            settings.check_server_url(self_url, "--self-url {url}")
        except ValueError as e:
            raise click.ClickException(f"{e} (e.g. http://sematic-k8s.sematic-k8s.svc:8000)") from None
    if rerun_launcher == "kubernetes" and not self_url:
        raise click.ClickException("--rerun-launcher kubernetes needs --self-url: the address rerun drivers reach this "
                                   "server at from their pods (e.g. http://sematic-k8s.sematic-k8s.svc:8000), never "
                                   "127.0.0.1")
    log_level = settings.log_level()  # a typo refused here, in one line, before anything starts
    home = _home(ctx, home_opt)
    url = _db_url(home, db_url)
    if workers > 1 and not url.startswith("postgresql"):
        raise click.ClickException(f"--workers {workers} needs a PostgreSQL database (--db-url postgresql+psycopg://"
                                   "...): SQLite has a single writer")
    params = {"host": host, "port": port, "db_url": url, "home": str(home), "local": local,
              "allow_docker": allow_docker, "rerun_launcher": rerun_launcher, "rerun_images": list(rerun_images),
              "rerun_namespace": rerun_namespace or os.environ.get(settings.NAMESPACE_ENV),
              "rerun_concurrency": rerun_concurrency, "rerun_queue": rerun_queue,
              "max_request_bytes": int(max_request_mb * 1024 * 1024), "body_timeout": body_timeout,
              "max_streams_per_key": max_streams_per_key, "token_max_hours": token_max_hours, "self_url": self_url,
              "cache_trusted_keys": list(cache_trusted_keys), "actions_by": actions_by}
    config = _config(params)
    storage = _storage(params)  # a bad $SEMATIC_K8S_STORAGE refused here, in one line, before anything starts
    from sematic_k8s_server import shutdown

    caller_sigterm = shutdown.exit_on_sigterm()  # asked to stop, it stops and exits 0, from here on
    try:
        with _claim_port(host, port):  # held until just before uvicorn binds it again: nothing takes it meanwhile
            _check_storage(storage, settings.STORAGE_ENV, os.environ.get(settings.STORAGE_ENV))
            for allowed_url, allowed in _allowed_storages():
                _check_storage(allowed, settings.STORAGE_ALLOW_ENV, allowed_url)
            store = _open_store(url, wait=settings.retry_window())  # migrated here, once, before any worker starts
            import uvicorn

            from sematic_k8s_server import auth

            if rerun_launcher and not rerun_images:
                click.echo("--rerun-launcher is set but no --rerun-image-repository: every rerun will be refused.",
                           err=True)
            if not local and not any(k["revoked_at"] is None for k in auth.list_keys(store.engine)):
                click.echo("No API keys yet: every request except /api/v1/health and /ready will get 401. Create one "
                           "with `sematic-k8s api-keys create NAME --admin` (or start with --local on this machine "
                           "only).", err=True)
            app = _app(params, config, store, storage) if workers == 1 else None
            click.echo(f"sematic-k8s server on http://{host}:{port} (database {redacted_url(url)}, data {home}, "
                       f"API keys {'off: local mode' if local else 'required'}, actions by {actions_by}, reruns "
                       f"{rerun_launcher or 'off'}{f', {workers} processes' if workers > 1 else ''})", err=True)
    except click.ClickException:  # refused before it served: the caller's SIGTERM handler again
        signal.signal(signal.SIGTERM, caller_sigterm)
        raise
    from sematic_k8s_server.connections import ConnectionLimits, uvicorn_config

    served_with = uvicorn_config(app if app is not None else f"{__name__}:worker_app", host=host, port=port,
                                 limits=ConnectionLimits(header_timeout, send_timeout),
                                 shutdown_timeout=shutdown_timeout,
                                 log_level=log_level, workers=workers)
    if app is not None:
        served = uvicorn.Server(served_with)
        served.run()
        if not served.started:  # as uvicorn.run: a server that could not start exits 3
            sys.exit(STARTUP_FAILURE)
        return
    store.close()
    os.environ[WORKER_PARAMS_ENV] = json.dumps(params)  # read by worker_app() in each process
    shutdown.run_processes(served_with)


STARTUP_FAILURE = 3  # uvicorn's exit status for a server that did not start
WORKER_PARAMS_ENV = settings.SERVER_PARAMS_ENV


def _claim_port(host: str, port: int) -> socket.socket:
    """A socket bound to the server's address as uvicorn binds it, for the caller to close just before uvicorn binds
    the address again: a port in use (or an address this machine does not have) refused in one line, before anything
    starts (was uvicorn's "[Errno 98] error while attempting to bind ..." after the banner)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a port left in TIME_WAIT is free
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise click.ClickException(f"port {port} on {host} is already in use by another process: choose another "
                                       "--port, or stop the process using it") from None
        raise click.ClickException(f"cannot listen on {host} port {port}: {e.strerror or e}; check --host and "
                                   "--port") from None
    return sock


def _check_storage(storage: Any, env: str, shown: str | None) -> None:  # noqa: ANN401 - Storage, imported lazily
    """A storage the server reads (its own, one on its allow-list) checked once before it starts (S3: one HEAD of its
    bucket, retried for the storage's retry window): a missing bucket or credentials S3 refuses are refused in one
    line, as an unopenable database is, rather than met by the first artifact or log request. An endpoint that does
    not answer (an outage) is said in one line and the server starts: it serves its records meanwhile, as a running
    server does through an S3 outage. ``env`` and ``shown``: the setting that names it, and how it was written."""
    check = getattr(storage, "check", None)  # S3's; a local directory is made by its first write
    if check is None:
        return
    from sematic_k8s.errors import S3CredentialsError, StorageError
    from sematic_k8s.storage.s3 import transient
    from sematic_k8s_server.storages import REQUEST_RETRY_WINDOW

    said = f"${env} {shown}"  # as the operator wrote it
    retries = logging.getLogger("sematic_k8s")
    level = retries.level
    retries.setLevel(logging.ERROR)  # not its "retrying" warning too: the refusal below says it, in one line
    try:
        check()
    except S3CredentialsError as e:  # its words say what to do
        raise click.ClickException(f"{said}: {e}") from None
    except StorageError as e:
        if e.__cause__ is not None and transient(e.__cause__):
            click.echo(f"Warning: {said}: {e} (for {REQUEST_RETRY_WINDOW:g} s); the server starts: its artifact and "
                       "log requests answer 503 until S3 answers (if it never does, give the storage an endpoint that "
                       f"does: ?endpoint= in ${env}, or $AWS_ENDPOINT_URL_S3)", err=True)
            return
        raise click.ClickException(f"{said}: {e}; correct ${env}, or create the bucket") from None
    finally:
        retries.setLevel(level)


def _config(params: dict[str, Any]) -> Any:  # noqa: ANN401 - ServerConfig, imported lazily
    import datetime as dt

    from sematic_k8s_server.config import RerunConfig, ServerConfig

    storage_setting = os.environ.get(settings.STORAGE_ENV)  # e.g. s3://bucket/prefix, as drivers and workers use
    namespace = params["rerun_namespace"]
    try:
        settings.heartbeat_interval()  # read by its threads (claim beats, sweeper) later: a bad one refused now
        settings.heartbeat_timeout()
        return ServerConfig(
            api_keys_required=not params["local"], max_request_bytes=params["max_request_bytes"],
            body_timeout=params["body_timeout"], max_streams_per_key=params["max_streams_per_key"],
            reruns=RerunConfig(launcher=params["rerun_launcher"], image_repositories=tuple(params["rerun_images"]),
                               allow_docker=params["allow_docker"], storage_url=storage_setting,
                               executor_settings={"namespace": namespace} if namespace else {},
                               concurrency=params["rerun_concurrency"], queue=params["rerun_queue"],
                               token_lifetime=dt.timedelta(hours=params["token_max_hours"])),
            allowed_storages=tuple(u for u in os.environ.get(settings.STORAGE_ALLOW_ENV, "").split(",") if u.strip()),
            cache_trusted_keys=tuple(params.get("cache_trusted_keys", ())), actions_by=params.get("actions_by", TEAM),
            token_sweep_namespaces=tuple(dict.fromkeys(
                n.strip() for n in os.environ.get(settings.TOKEN_SWEEP_NAMESPACES_ENV, "").split(",") if n.strip())))
    except ValueError as e:
        raise click.ClickException(str(e)) from None


def _app(params: dict[str, Any], config: Any, store: Any, storage: Any = None) -> Any:  # noqa: ANN401 - lazily
    from sematic_k8s_server.app import create_app

    host, port, self_url = params["host"], params["port"], params.get("self_url")
    if not self_url:
        self_host = "127.0.0.1" if host in ("0.0.0.0", "::", "localhost") else host
        self_url = f"http://[{self_host}]:{port}" if ":" in self_host else f"http://{self_host}:{port}"
    return create_app(store, storage if storage is not None else _storage(params), config, self_url=self_url)


def _storage(params: dict[str, Any]) -> Any:  # noqa: ANN401 - Storage, imported lazily
    """$SEMATIC_K8S_STORAGE, else HOME/storage; a bad URL in one line."""
    from sematic_k8s.storage.local import LocalStorage
    from sematic_k8s.storage.urls import storage_from_url
    from sematic_k8s_server.storages import REQUEST_RETRY_WINDOW

    storage_setting = os.environ.get(settings.STORAGE_ENV)
    try:
        return (storage_from_url(storage_setting, retry_window=REQUEST_RETRY_WINDOW) if storage_setting
                else LocalStorage(Path(params["home"]) / "storage"))
    except ValueError as e:  # an unsupported or malformed URL
        raise click.ClickException(f"${settings.STORAGE_ENV}: {e}") from None


def _allowed_storages() -> list[tuple[str, Any]]:
    """The storages of $SEMATIC_K8S_STORAGE_ALLOW, each as written and opened (not yet contacted): a bad URL in one
    line, at start, rather than a refusal of the first resolution recorded there."""
    from sematic_k8s.storage.urls import storage_from_url
    from sematic_k8s_server.storages import REQUEST_RETRY_WINDOW

    opened = []
    for url in (u.strip() for u in os.environ.get(settings.STORAGE_ALLOW_ENV, "").split(",")):
        if not url:
            continue
        try:
            opened.append((url, storage_from_url(url, retry_window=REQUEST_RETRY_WINDOW)))
        except ValueError as e:
            raise click.ClickException(f"${settings.STORAGE_ALLOW_ENV}: {url}: {e}") from None
    return opened


def worker_app() -> Any:  # noqa: ANN401 - FastAPI app
    """The app of one of ``server --workers N``'s processes (uvicorn's factory), from the parent's settings."""
    params = json.loads(os.environ[WORKER_PARAMS_ENV])
    from sematic_k8s_server.db import open_store

    return _app(params, _config(params), open_store(params["db_url"]))


@click.group("api-keys")
def api_keys() -> None:
    """API keys for the server (stored hashed in its database)."""


@api_keys.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="An admin key: it may also list, create and revoke keys through the API.")
@click.option("--read-only", is_flag=True,
              help="A read-only key (dashboards, monitoring, CI status checks): it may only read; the server refuses "
                   "it every write and action (403).")
@db_url_option
@home_option
@click.pass_context
def api_keys_create(ctx: click.Context, name: str, admin: bool, read_only: bool, db_url: str | None,
                    home_opt: Path | None) -> None:
    """Create a key named NAME and print it (once: only its hash is stored)."""
    from sematic_k8s_server import auth

    if admin and read_only:
        raise click.UsageError(f"--admin and --read-only together: {auth.ROLE_CONFLICT}")
    with contextlib.closing(_open_store(_db_url(_home(ctx, home_opt), db_url))) as store:
        try:
            key, row = auth.new_api_key(store.engine, name, admin=admin, read_only=read_only)
        except ValueError as e:
            raise click.ClickException(str(e)) from None
        kind = "Admin API" if admin else "Read-only API" if read_only else "API"
        click.echo(f"{kind} key {name!r} created; it is shown only now. Send it as the "
                   f"{auth.HEADER} header, or set {settings.API_KEY_ENV} for resolvers:", err=True)
        try:
            out(key)
        except (OutputFailed, BrokenPipeError) as e:  # shown to no one: no one may hold it
            auth.revoke_key(store.engine, row["id"], by_id_only=True)
            said = e.format_message() if isinstance(e, OutputFailed) else "its reader is gone"
            raise click.ClickException(f"API key {name!r} could not be printed ({said}), so it was revoked at once: "
                                       "create it again with standard output open") from None


@api_keys.command("list")
@db_url_option
@home_option
@click.pass_context
def api_keys_list(ctx: click.Context, db_url: str | None, home_opt: Path | None) -> None:
    """List keys: id, name, role, creation time and when revoked, in this machine's zone (never the keys)."""
    from sematic_k8s_server import auth

    with contextlib.closing(_open_store(_keys_db_url(ctx, home_opt, db_url))) as store:
        keys = auth.list_keys(store.engine)
    emit("table", [{"ID": row["id"], "NAME": row["name"], "ROLE": auth.role_of(row["admin"], row["read_only"]),
                    "CREATED": row["created_at"],
                    "STATE": f"revoked {local_time(row['revoked_at'])}" if row["revoked_at"] else "active"}
                   for row in keys])


@api_keys.command("revoke")
@click.argument("name_or_id")
@db_url_option
@home_option
@click.pass_context
def api_keys_revoke(ctx: click.Context, name_or_id: str, db_url: str | None, home_opt: Path | None) -> None:
    """Revoke the key with this id, or every key with this name: every server refuses it (and the tokens it
    minted for drivers) from the next request on."""
    from sematic_k8s_server import auth

    with contextlib.closing(_open_store(_keys_db_url(ctx, home_opt, db_url))) as store:
        n = auth.revoke_key(store.engine, name_or_id)
    if n == 0:
        raise click.ClickException(f"no active API key named {name_or_id!r} or with that id "
                                   "(see `sematic-k8s api-keys list`)")
    click.echo(f"revoked {n} key(s): {name_or_id!r}", err=True)


def register(group: click.Group) -> None:
    """Add ``server`` and ``api-keys`` to the ``sematic-k8s`` command group."""
    group.add_command(server)
    group.add_command(api_keys)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(DEBUG, is_flag=True, expose_value=False, help="On failure, also print the traceback.")
def main() -> None:
    """The sematic-k8s server commands on their own (``python -m sematic_k8s_server.cli``), failing as the
    ``sematic-k8s`` CLI does: in one line."""


register(main)
_sk_cli = sys.modules.get("sematic_k8s.cli")  # imported by this module's own imports: its group has no server
if _sk_cli is not None and hasattr(_sk_cli, "cli") and "server" not in _sk_cli.cli.commands:  # commands yet
    register(_sk_cli.cli)

if __name__ == "__main__":
    main()
