"""Every SEMATIC_K8S_* environment variable is named once, in sematic_k8s/settings.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sematic_k8s import settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [ROOT / "sematic_k8s", ROOT / "server" / "sematic_k8s_server"]


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes (documentation may name variables)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def test_environment_variables_are_named_only_in_settings():
    found = []
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            if path == ROOT / "sematic_k8s" / "settings.py":
                continue
            tree = ast.parse(path.read_text(), str(path))
            docs = _docstrings(tree)
            for node in ast.walk(tree):
                if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
                        and settings.PREFIX in node.value):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "name these through sematic_k8s.settings:\n" + "\n".join(found)


def test_each_variable_is_named_once_with_a_description():
    source = (ROOT / "sematic_k8s" / "settings.py").read_text()
    names = [v for k, v in vars(settings).items() if k.endswith("_ENV") and isinstance(v, str)]
    assert len(names) == len(set(names)), "a variable is named twice"
    assert all(n.startswith(settings.PREFIX) for n in names)
    for line in source.splitlines():
        if line.split(" = ")[0].endswith("_ENV") and " = " in line:
            assert "  # " in line, f"no description: {line}"


def test_s3_keys_come_from_their_variables_else_from_the_files_a_docker_driver_is_given(tmp_path, monkeypatch):
    for name in settings.STORAGE_KEY_ENVS:
        monkeypatch.delenv(name, raising=False)
    assert settings.storage_keys() == {}
    secret = tmp_path / "aws_secret_access_key"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv(settings.SECRET_FILE_ENVS["AWS_SECRET_ACCESS_KEY"], str(secret))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID")
    assert settings.storage_keys() == {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "from-a-file"}
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-the-variable")
    assert settings.storage_keys()["AWS_SECRET_ACCESS_KEY"] == "from-the-variable"
    assert not set(settings.STORAGE_KEY_ENVS) & set(settings.worker_env())  # never passed on to workers


@pytest.mark.parametrize("raw", ["inf", "Infinity", "1e999"])
def test_a_duration_of_inf_is_refused_in_one_line_naming_the_default(monkeypatch: pytest.MonkeyPatch,
                                                                     raw: str) -> None:
    """$SEMATIC_K8S_HEARTBEAT_TIMEOUT=inf (1e999 too: float() makes it inf): refused, the default named. Was
    taken: a claim holder's beat every inf/4 s, whose wait raised OverflowError and ended its thread."""
    monkeypatch.setenv(settings.HEARTBEAT_TIMEOUT_ENV, raw)
    with pytest.raises(settings.BadSetting) as e:
        settings.heartbeat_timeout()
    assert str(e.value) == (f"$SEMATIC_K8S_HEARTBEAT_TIMEOUT must be a finite number of seconds, got {raw!r}: set one "
                            "(the default is 60) or unset it")
    monkeypatch.setenv(settings.RETRY_WINDOW_ENV, raw)
    with pytest.raises(settings.BadSetting, match="RETRY_WINDOW must be a finite number of seconds"):
        settings.retry_window()


def test_the_pool_timeout_is_below_the_clients_request_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """$SEMATIC_K8S_DB_POOL_TIMEOUT defaults to 20 s, and 60 (the HTTP store's request timeout) or more is refused
    in one line with the reason: a request waiting that long for a connection had its 503 answered after its client
    gave up and sent it again. Was: 60 by default, and any value taken."""
    monkeypatch.delenv(settings.DB_POOL_TIMEOUT_ENV, raising=False)
    assert settings.db_pool_timeout() == 20 < settings.CLIENT_REQUEST_TIMEOUT == 60
    monkeypatch.setenv(settings.DB_POOL_TIMEOUT_ENV, "59.5")
    assert settings.db_pool_timeout() == 59.5
    monkeypatch.setenv(settings.DB_POOL_TIMEOUT_ENV, "60")
    with pytest.raises(settings.BadSetting) as e:
        settings.db_pool_timeout()
    assert str(e.value) == ("$SEMATIC_K8S_DB_POOL_TIMEOUT must be below 60 s, the clients' request timeout (its 503 "
                            "would come after they gave up and sent the request again), got '60': set it lower (the "
                            "default is 20) or unset it")


@pytest.mark.parametrize(("raw", "level"), [(None, "info"), ("", "info"), ("WARNING", "warning"), (" debug ", "debug"),
                                            ("trace", "trace")])
def test_the_log_level_is_one_of_uvicorns_names_in_any_case(monkeypatch: pytest.MonkeyPatch, raw: str | None,
                                                            level: str) -> None:
    """What uvicorn takes (its names, lower case), from what a user writes; another value: the CLI test's one line."""
    if raw is None:
        monkeypatch.delenv(settings.LOG_LEVEL_ENV, raising=False)
    else:
        monkeypatch.setenv(settings.LOG_LEVEL_ENV, raw)
    assert settings.log_level() == level
    import uvicorn.config

    assert set(settings.LOG_LEVELS) == set(uvicorn.config.LOG_LEVELS)
