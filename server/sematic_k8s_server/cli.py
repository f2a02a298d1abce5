"""``sematic-k8s server`` and ``sematic-k8s api-keys``: click commands, registered on the main CLI with
:func:`register`. Server dependencies (FastAPI, uvicorn, Alembic) are imported only when used."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import click

from sematic_k8s import settings

LOOPBACK_NAMES = ("localhost",)

db_url_option = click.option("--db-url", help=f"SQLAlchemy URL of the metadata database (default: "
                                              f"${settings.DB_URL_ENV}, else SQLite in the data directory).")
home_option = click.option("--home", "home_opt", type=click.Path(file_okay=False, path_type=Path),
                           help=f"Data directory (default: the CLI's --home, ${settings.HOME_ENV}, ~/.sematic_k8s).")


def _home(ctx: click.Context, home_opt: Path | None) -> Path:
    return settings.home(home_opt or ctx.find_root().params.get("home"))


def _db_url(home: Path, db_url: str | None) -> str:
    return db_url or settings.db_url(home)


def _open_store(url: str):  # noqa: ANN202 - SqlStore, imported lazily
    try:
        from sematic_k8s_server.db import open_store
    except ImportError as e:
        raise click.ClickException(f"the server needs its extra dependencies: pip install 'sematic-k8s[server]' "
                                   f"({e})") from None
    try:
        return open_store(url)
    except Exception as e:  # noqa: BLE001 - any driver error: say which database
        raise click.ClickException(f"cannot open the metadata database {url}: {e}") from None


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@db_url_option
@click.option("--local", is_flag=True, help="No API keys: for a server only this machine can reach (loopback).")
@home_option
@click.pass_context
def server(ctx: click.Context, host: str, port: int, db_url: str | None, local: bool, home_opt: Path | None) -> None:
    """Serve the REST API and the dashboard over the metadata database (migrated at startup).

    Artifacts and logs are read from $SEMATIC_K8S_STORAGE (e.g. s3://bucket/prefix) if set, else HOME/storage
    (where server-started local reruns write too), and from the storages in $SEMATIC_K8S_STORAGE_ALLOW
    (comma-separated URLs) for cloud resolutions that recorded theirs there.
    """
    if local and not _is_loopback(host):
        raise click.ClickException("--local turns API keys off, so the server may only listen on a loopback "
                                   f"address (127.0.0.1, ::1 or localhost), not {host}")
    home = _home(ctx, home_opt)
    url = _db_url(home, db_url)
    store = _open_store(url)
    import uvicorn

    from sematic_k8s.storage.local import LocalStorage
    from sematic_k8s.storage.urls import storage_from_url
    from sematic_k8s_server import auth
    from sematic_k8s_server.app import create_app

    if not local and not auth.list_keys(store.engine):
        click.echo("No API keys yet: every request except /api/v1/health will get 401. Create one with "
                   "`sematic-k8s api-keys create NAME` (or start with --local on this machine only).", err=True)
    self_host = "127.0.0.1" if host in ("0.0.0.0", "::", "localhost") else host
    self_url = f"http://[{self_host}]:{port}" if ":" in self_host else f"http://{self_host}:{port}"
    storage_setting = os.environ.get(settings.STORAGE_ENV)  # e.g. s3://bucket/prefix, as drivers and workers use
    storage = storage_from_url(storage_setting) if storage_setting else LocalStorage(home / "storage")
    from sematic_k8s_server.storages import ALLOW_ENV

    allowed = os.environ.get(ALLOW_ENV, "").split(",")  # other storages cloud resolutions may have recorded in
    app = create_app(store, storage, api_keys_required=not local, self_url=self_url, allowed_storages=allowed)
    click.echo(f"sematic-k8s server on http://{host}:{port} (database {_redact(url)}, data {home}, "
               f"API keys {'off: local mode' if local else 'required'})", err=True)
    uvicorn.run(app, host=host, port=port, log_level=os.environ.get(settings.LOG_LEVEL_ENV, "info"),
                timeout_graceful_shutdown=5)


def _redact(url: str) -> str:
    """A database URL without its password."""
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return "<unparseable URL>"


@click.group("api-keys")
def api_keys() -> None:
    """API keys for the server (stored hashed in its database)."""


@api_keys.command("create")
@click.argument("name")
@db_url_option
@home_option
@click.pass_context
def api_keys_create(ctx: click.Context, name: str, db_url: str | None, home_opt: Path | None) -> None:
    """Create a key named NAME and print it (once: only its hash is stored)."""
    from sematic_k8s_server import auth

    store = _open_store(_db_url(_home(ctx, home_opt), db_url))
    try:
        key = auth.create_key(store.engine, name)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"API key {name!r} created; it is shown only now. Send it as the {auth.HEADER} header, or "
               f"set {settings.API_KEY_ENV} for resolvers:", err=True)
    click.echo(key)


@api_keys.command("list")
@db_url_option
@home_option
@click.pass_context
def api_keys_list(ctx: click.Context, db_url: str | None, home_opt: Path | None) -> None:
    """List key names and creation times (never the keys)."""
    from sematic_k8s_server import auth

    store = _open_store(_db_url(_home(ctx, home_opt), db_url))
    for row in auth.list_keys(store.engine):
        click.echo(f"{row['name']}\t{row['created_at']:%Y-%m-%d %H:%M:%S}")


@api_keys.command("delete")
@click.argument("name")
@db_url_option
@home_option
@click.pass_context
def api_keys_delete(ctx: click.Context, name: str, db_url: str | None, home_opt: Path | None) -> None:
    """Delete every key named NAME (servers forget them within 30 seconds)."""
    from sematic_k8s_server import auth

    store = _open_store(_db_url(_home(ctx, home_opt), db_url))
    n = auth.delete_key(store.engine, name)
    if n == 0:
        raise click.ClickException(f"no API key named {name!r}")
    click.echo(f"deleted {n} key(s) named {name!r}", err=True)


def register(group: click.Group) -> None:
    """Add ``server`` and ``api-keys`` to the ``sematic-k8s`` command group."""
    group.add_command(server)
    group.add_command(api_keys)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The sematic-k8s server commands on their own (``python -m sematic_k8s_server.cli``)."""


register(main)

if __name__ == "__main__":
    main()
