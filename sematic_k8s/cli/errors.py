"""The CLI's one error handler: every failure is one line on stderr naming the problem and what to do, with a
non-zero exit (2 for a command used wrongly, 130 when interrupted, else 1); ``--debug`` anywhere on the command
line also prints the traceback. A group given no command (``sematic-k8s``, ``sematic-k8s runs``) prints its help
instead, exit 2."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

import click
import sqlalchemy.exc

from sematic_k8s import settings
from sematic_k8s.error_records import one_line
from sematic_k8s.errors import CorruptRecord, InfrastructureError, ServerError
from sematic_k8s.store import sqlite_unusable
from sematic_k8s.terminal_safe import visible

DEBUG = "--debug"
# a ServerError about reaching the server or being let in (None: not reached; 401 says what to do itself)
ACCESS_STATUSES = (None, 403)
# a group given no command (click >= 8.2; before, the group printed its help and exited 0 itself)
NO_ARGS_IS_HELP: tuple[type[click.UsageError], ...] = tuple(
    c for c in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if c is not None)


def describe(exc: BaseException) -> str:
    """One line for an error no command turned into a ClickException."""
    if isinstance(exc, ServerError):  # the server's word (its detail) unless it could not be reached or refused us
        hint = f"; check ${settings.SERVER_ENV} and ${settings.API_KEY_ENV}" if exc.status in ACCESS_STATUSES else ""
        return one_line(str(exc)) + hint
    if isinstance(exc, CorruptRecord | settings.BadSetting):  # their words say what to do
        return one_line(str(exc))
    if isinstance(exc, sqlalchemy.exc.SQLAlchemyError):
        orig = exc.orig if hasattr(exc, "orig") else exc
        unusable = sqlite_unusable(exc)
        if unusable is not None:  # damaged, or read-only here: its own fix
            return ": ".join(unusable)
        return f"the metadata database failed: {one_line(str(orig))}; check ${settings.DB_URL_ENV} or --home"
    if isinstance(exc, InfrastructureError):
        return one_line(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    text = one_line(str(exc))
    return f"unexpected {type(exc).__name__}{': ' + text if text else ''} (run again with {DEBUG} for the traceback)"


class Group(click.Group):
    """A click group whose ``main`` routes every failure through :func:`fail`."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        debug = _take_debug(argv)
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as e:
            code = e.exit_code
        except NO_ARGS_IS_HELP as e:  # `sematic-k8s`, `sematic-k8s runs`: the help, as click shows it (its message
            e.show()  # is the whole help: one line of it was only "Usage: sematic-k8s [OPTIONS] COMMAND [ARGS]...")
            sys.exit(e.exit_code)
        except click.UsageError as e:
            fail(f"{e.format_message()} (see `{_command_path(e.ctx, prog_name)} --help`)", 2, debug)
        except click.ClickException as e:
            fail(e.format_message(), e.exit_code, debug)
        except (KeyboardInterrupt, click.Abort):
            fail("interrupted", 130, debug)
        except Exception as e:  # noqa: BLE001 - this is the handler of last resort
            fail(describe(e), 1, debug)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def _take_debug(argv: list[str]) -> bool:
    """Remove ``--debug`` from the arguments before ``--``; whether it was there."""
    end = argv.index("--") if "--" in argv else len(argv)
    found = DEBUG in argv[:end]
    argv[:end] = [a for a in argv[:end] if a != DEBUG]
    return found


def _command_path(ctx: click.Context | None, prog_name: str | None) -> str:
    return ctx.command_path if ctx is not None else (prog_name or "sematic-k8s")


def fail(message: str, code: int, debug: bool) -> NoReturn:
    """Print the traceback (``debug``) and ``Error: message`` on one line to stderr, and exit with ``code``."""
    if debug and sys.exc_info()[0] is not None:
        traceback.print_exc(file=sys.stderr)
    click.echo(f"Error: {visible(one_line(message))}", err=True)  # it may quote a record: no control characters
    sys.exit(code)
