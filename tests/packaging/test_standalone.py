"""The repository stands alone, and its README tells the truth about commands and endpoints."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_nothing_refers_to_files_outside_the_repository():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    outside = ["../" + "shared", "shared/" + "infra"]  # spelled apart so that this file does not match itself
    proc = subprocess.run(["git", "-C", str(REPO), "grep", "-n", "-F", *(a for o in outside for a in ("-e", o))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout  # 1: no match


def test_the_scripts_and_documents_ci_needs_are_here():
    ci = (REPO / ".ci" / "run").read_text()
    for script in ("up.sh", "base-image.sh"):
        assert (REPO / "infra" / script).is_file() and f'"$INFRA_SCRIPTS/{script}"' in ci
    assert 'INFRA_SCRIPTS="$PWD/infra"' in ci
    assert (REPO / "infra" / "down.sh").is_file() and (REPO / "docs" / "DESIGN.md").is_file()
    for link in re.findall(r"\]\(([^)#]+)\)", README):
        if not link.startswith(("http://", "https://")):
            assert (REPO / link).exists(), f"README links to missing {link}"


def test_readme_commands_are_make_targets():
    targets = set(re.findall(r"^([a-z]+):", (REPO / "Makefile").read_text(), re.M))
    commands = re.findall(r"^make (\w+)", README, re.M)
    assert {"run", "test"} <= set(commands) <= targets
    assert "`make bench`" in README and "bench" in targets
    assert ".venv/bin/sematic-k8s resolutions list" in README  # how to call the CLI after `make run`


def test_readme_endpoints_are_the_servers_routes(tmp_path):
    from sematic_k8s.storage.local import LocalStorage
    from sematic_k8s_server.app import create_app
    from sematic_k8s_server.db import open_store

    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    app = create_app(store, LocalStorage(tmp_path / "storage"), api_keys_required=True)
    routes = {(method.upper(), re.sub(r"\{[^}]+\}", "{}", path))
              for path, ops in app.openapi()["paths"].items() for method in ops}
    named = re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/api/v1/[^`\s]*)`", README)
    assert len(named) >= 10
    for method, path in named:
        assert (method, re.sub(r"\{[^}]+\}", "{}", path)) in routes, f"README names {method} {path}: no such route"
    public = {path for path in app.openapi()["paths"]} | {"/docs", "/openapi.json"}
    for path in re.findall(r"`(/(?:api/v1/health|docs|openapi\.json))`", README):
        assert path in public
    assert not re.search(r"`/(health|events)`", README)  # always the full /api/v1 path


def test_the_readmes_command_line_names_every_command_and_only_their_options():
    """Each command of ``sematic-k8s`` (a group's each subcommand) has a line in the README's "Command line" block,
    and every option a line gives is one of that command's (was: ``resolutions tag`` and ``note`` not listed)."""
    import click

    from sematic_k8s.cli import cli

    block = README.split("## Command line", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].split() for line in block.splitlines() if line.startswith("sematic-k8s ")]
    ctx = click.Context(cli)
    leaves: dict[tuple[str, ...], click.Command] = {}
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None
        if isinstance(command, click.Group):
            for sub in command.list_commands(ctx):
                leaves[(name, sub)] = command.commands[sub]
        else:
            leaves[(name,)] = command
    for path, command in leaves.items():
        given = [words for words in lines if tuple(words[1:1 + len(path)]) == path]
        assert given, f"the README's command line lists no `sematic-k8s {' '.join(path)}`"
        options = {opt for param in command.params for opt in param.opts + param.secondary_opts}
        for words in given:
            for word in words:
                if word.lstrip("[").startswith("--"):
                    option = word.lstrip("[").rstrip("]").split("|")[0].split("=")[0]
                    assert option in options, f"`sematic-k8s {' '.join(path)}` has no option {option}"
