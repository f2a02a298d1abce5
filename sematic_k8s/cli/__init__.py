"""``sematic-k8s``: inspect recorded resolutions and runs, read their logs, cancel and re-run them.

One module per job: :mod:`.records` (where records are read; runs found by id or a unique start of it),
:mod:`.output` (tables, JSON, times), :mod:`.errors` (every failure as one line; ``--debug``), and the commands
(:mod:`.resolutions`, :mod:`.runs`, :mod:`.logs`, :mod:`.cancel`, :mod:`.rerun`; :mod:`.server` adds the server's).
"""

from __future__ import annotations

from pathlib import Path

import click

from sematic_k8s import settings
from sematic_k8s.cli.cancel import cancel
from sematic_k8s.cli.errors import DEBUG, Group
from sematic_k8s.cli.logs import logs
from sematic_k8s.cli.options import HomeDir
from sematic_k8s.cli.rerun import rerun
from sematic_k8s.cli.resolutions import resolutions
from sematic_k8s.cli.runs import runs
from sematic_k8s.cli.server import register_server_commands


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=HomeDir(),
              help=f"Data directory (default: ${settings.HOME_ENV}, else ~/.sematic_k8s).")
@click.option(DEBUG, is_flag=True, expose_value=False,
              help="On failure, also print the traceback (accepted anywhere on the line).")
def cli(home: Path | None) -> None:
    """Inspect, cancel and re-run sematic-k8s pipelines: recorded in the embedded database of --home, or by the
    server at $SEMATIC_K8S_SERVER when it is set. Ids may be shortened to any unique start."""


for command in (resolutions, runs, logs, cancel, rerun):
    cli.add_command(command)
register_server_commands(cli)


def main() -> None:
    """Console entry point."""
    cli(prog_name="sematic-k8s")


__all__ = ["cli", "main"]
