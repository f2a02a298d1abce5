"""``server`` and ``api-keys`` come with the server extra (``pip install 'sematic-k8s[server]'``); without it they
still exist and say how to install it into this Python (:func:`sematic_k8s.version.install_command`)."""

from __future__ import annotations

import sys

import click

from sematic_k8s.version import install_command


def register_server_commands(group: click.Group) -> None:
    """Add the server's commands to ``group``, or stand-ins naming the extra they need. When the server's CLI
    module is the one importing this package (it was imported first), it adds them itself once it has them."""
    loading = sys.modules.get("sematic_k8s_server.cli")
    if loading is not None and not hasattr(loading, "register"):
        return
    try:
        from sematic_k8s_server.cli import register
    except ImportError as e:
        for name in ("server", "api-keys"):
            group.add_command(_needs_server_extra(name, e))
        return
    register(group)


def _needs_server_extra(name: str, error: ImportError) -> click.Command:
    """A stand-in for the command ``name`` that fails, whatever its arguments, with one line naming the extra."""
    install = install_command("server")  # into this Python, from where it was installed: a clone's venv too
    message = f"`sematic-k8s {name}` needs the server extra: {install} ({error})"

    @click.command(name, help=f"Needs the server extra: {install} ({error}).",
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def command() -> None:
        raise click.ClickException(message)

    return command
