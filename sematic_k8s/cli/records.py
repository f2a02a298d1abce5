"""Where the CLI reads records: the data directory, the store (the server's when $SEMATIC_K8S_SERVER is set, else
the embedded database), a run's logs, and runs found by their id or a unique start of it. Every problem is a
one-line :class:`click.ClickException` naming what to do."""

from __future__ import annotations

import os
from pathlib import Path

import click
import httpx

from sematic_k8s import settings
from sematic_k8s.errors import DatabaseUnopenable
from sematic_k8s.storage.base import Storage, log_key
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.storage.urls import storage_from_url
from sematic_k8s.store import lookup, missing_sqlite_file, open_store, sqlite_file, unrecorded_sqlite
from sematic_k8s.store.base import Store
from sematic_k8s.store.http import API, HttpStore
from sematic_k8s.store.records import ResolutionRecord, RunRecord

PROBE_TIMEOUT = 5.0  # seconds for the server's health check
PROBE_TRIES = 3  # health checks whose connection is closed unanswered before the server is said not to answer


def home(ctx: click.Context, *, create: bool = True) -> Path:
    """The data directory: --home, else $SEMATIC_K8S_HOME, else ~/.sematic_k8s; created if missing unless ``create``
    is False (a read)."""
    try:
        return settings.home(ctx.find_root().params.get("home"), create=create)
    except OSError as e:
        raise click.ClickException(str(e)) from None


def server_url() -> str | None:
    return os.environ.get(settings.SERVER_ENV) or None


class NothingRecorded(click.ClickException):
    """The home has no database yet (the default one, or a directory given that exists): nothing was resolved with it
    (a listing is empty)."""


def store(ctx: click.Context) -> Store:
    """The server's records when $SEMATIC_K8S_SERVER is set (checked to answer), else the embedded database, which
    a read never creates: see :func:`_check_recorded`."""
    url = server_url()
    if url:
        _check_server(url)
        return open_store(Path("."), url)
    path = home(ctx, create=False)
    _check_recorded(ctx, path)
    try:
        return open_store(path)
    except DatabaseUnopenable as e:
        raise click.ClickException(f"{e.problem}; check ${settings.DB_URL_ENV} or --home" if e.in_settings
                                   else str(e)) from None


def _check_recorded(ctx: click.Context, path: Path) -> None:
    """Nothing to read when the SQLite database a read would open does not exist (opening it would make it, and
    the home around it): one line naming the home given (--home, $SEMATIC_K8S_HOME) or the file
    ($SEMATIC_K8S_DB_URL) that is not there, a typo most likely; for the default home, or a directory given that
    exists (made for it, or a home whose first resolution is still to come), :class:`NothingRecorded`."""
    try:
        file = missing_sqlite_file(settings.db_url(path))
    except OSError as e:  # the home cannot be looked into
        raise click.ClickException(f"cannot read the home {path} ({e.strerror or e}): give this user read and write "
                                   f"access to it, or name another with --home or ${settings.HOME_ENV}") from None
    if file is None:
        _check_sematic(ctx, path)
        return
    if file.exists():  # there, but not a file: never "nothing recorded"
        raise click.ClickException(f"the metadata database {file} is not a file: move it away, or check --home, "
                                   f"${settings.HOME_ENV} and ${settings.DB_URL_ENV}")
    if os.environ.get(settings.DB_URL_ENV):
        raise click.ClickException(f"the metadata database {file} does not exist: nothing has been resolved there; "
                                   f"check ${settings.DB_URL_ENV}")
    given = ("--home" if ctx.find_root().params.get("home")
             else f"${settings.HOME_ENV}" if os.environ.get(settings.HOME_ENV) else None)
    if given is None:
        raise NothingRecorded(f"nothing has been recorded yet in the default home {path} (the first resolution "
                              f"makes it; --home or ${settings.HOME_ENV} name another)")
    if path.is_dir():
        raise NothingRecorded(f"nothing has been recorded yet in the home {path} ({given}; the first resolution "
                              "recorded in it makes its database)")
    why = "not a directory" if path.exists() else "no such directory"
    raise click.ClickException(f"no sematic-k8s home at {path} ({why}): nothing has been resolved there; check "
                               f"{given} (a home is made by the first resolution recorded in it)")


def _check_sematic(ctx: click.Context, path: Path) -> None:
    """A SQLite database that holds none of sematic-k8s's tables is not opened by a read, which would make them in
    it: an empty one (a file of no bytes) is :class:`NothingRecorded`; another program's is refused, named."""
    url = settings.db_url(path)
    tables = unrecorded_sqlite(url)
    if tables is None:
        return
    file = sqlite_file(url)
    if not tables:
        raise NothingRecorded(f"nothing has been recorded yet in {file} (an empty database)")
    named = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
    raise click.ClickException(f"{file} is not a sematic-k8s database (its tables: {named}), and a read leaves it as "
                               f"it is: check --home, ${settings.HOME_ENV} and ${settings.DB_URL_ENV}")


def _check_server(url: str) -> None:
    """One quick GET of /api/v1/health, so an unreachable or wrong server is one clear line, at once."""
    fix = f"check ${settings.SERVER_ENV} (unset it to read the local database)"
    try:
        settings.check_server_url(url, f"${settings.SERVER_ENV}={{url}}")
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    health = f"{url.rstrip('/')}{API}/health"
    for attempt in range(1, PROBE_TRIES + 1):
        try:
            response = httpx.get(health, timeout=PROBE_TIMEOUT)
            break
        except httpx.ConnectError as e:
            raise click.ClickException(f"cannot reach the sematic-k8s server at {url} ({e}): is it running "
                                       f"(`sematic-k8s server`)? Else {fix}") from None
        except httpx.HTTPError as e:
            if isinstance(e, httpx.RemoteProtocolError | httpx.ReadError) and attempt < PROBE_TRIES:
                continue  # closed unanswered: a replica stopping behind a load balancer; the next one answers
            raise click.ClickException(f"the sematic-k8s server at {url} did not answer ({type(e).__name__}: {e}); "
                                       f"{fix}") from None
    try:
        ok = response.status_code == 200 and response.json().get("ok") is True
    except ValueError:
        ok = False
    if not ok:
        raise click.ClickException(f"{url} does not answer like a sematic-k8s server (GET {API}/health: HTTP "
                                   f"{response.status_code}); {fix}")


def find_run(records: Store, given: str) -> RunRecord:
    """The run whose id is ``given`` or starts with it (when only one does): :func:`lookup.find_run`."""
    try:
        return lookup.find_run(records, given)
    except LookupError as e:
        raise click.ClickException(str(e)) from None


def find_root(records: Store, given: str) -> RunRecord:
    """The root run (its id is its resolution's) of the run ``given`` names."""
    run = find_run(records, given)
    return run if run.root_id == run.id else _get(records, run.root_id)


def find_resolution(records: Store, given: str) -> ResolutionRecord:
    """The resolution ``given`` names: its id or a unique start of it (:func:`lookup.find_resolution`: a claimed
    rerun's too), else that of the run it names."""
    try:
        res = lookup.find_resolution(records, given)
    except LookupError as e:
        raise click.ClickException(str(e)) from None
    if res is None:
        root = find_root(records, given)
        res = records.get_resolution(root.id)
    if res is None:
        raise click.ClickException(f"no resolution with id {given!r}: list them with `sematic-k8s resolutions list`")
    return res


def _get(records: Store, run_id: str) -> RunRecord:
    run = records.get_run(run_id)
    if run is None:
        raise click.ClickException(f"no run with id {run_id!r}")
    return run


def read_logs(ctx: click.Context, records: Store, run: RunRecord) -> bytes | None:
    """A run's captured output, the bytes as stored: through the server when there is one (it reads artifact
    storage, so no storage credentials are needed here), else from the resolution's recorded storage (S3 for cloud
    runs) or HOME/storage. None when nothing was captured."""
    if isinstance(records, HttpStore):
        return records.get_logs(run.id) or None
    res = records.get_resolution(run.root_id)
    url = (res.settings or {}).get("storage_url") if res is not None else None
    if url:
        storage: Storage = storage_from_url(url)
    else:
        local = home(ctx, create=False) / "storage"
        if not local.is_dir():  # nothing stored here (a read makes no directory)
            return None
        storage = LocalStorage(local)
    try:
        return storage.get(log_key(run.id))
    except KeyError:
        return None
