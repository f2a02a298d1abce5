"""The public surface: what ``import sematic_k8s as sk`` offers is exactly ``sk.__all__``."""

from __future__ import annotations

import subprocess
import sys
import types

import sematic_k8s as sk


def test_all_lists_every_public_name_and_each_is_importable():
    public = {name for name in dir(sk) if not name.startswith("_")
              and not (isinstance(getattr(sk, name), types.ModuleType) and name not in sk.__all__)}
    assert sorted(sk.__all__) == sorted(public)
    for name in sk.__all__:
        assert getattr(sk, name) is not None


def test_exported_classes_and_functions_say_where_they_live():
    for name in sk.__all__:
        value = getattr(sk, name)
        if isinstance(value, types.ModuleType):
            assert value.__name__ == f"sematic_k8s.{name}"
        else:
            assert value.__module__.startswith("sematic_k8s."), name
            assert value.__doc__, f"sk.{name} has no docstring"


def test_the_resolvers_are_imported_only_when_used():
    """A worker imports the package with the user's module: the resolvers, the store and HTTP stay out."""
    code = ("import sys, sematic_k8s as sk\n"
            "assert not [m for m in sys.modules if m.startswith(('sematic_k8s.resolvers', 'sematic_k8s.store',"
            " 'sqlalchemy', 'httpx', 'boto3'))], sorted(sys.modules)\n"
            "assert sk.LocalResolver.__module__ == 'sematic_k8s.resolvers.local'")
    subprocess.run([sys.executable, "-c", code], check=True)
    driver = ("import sys, sematic_k8s.driver\n"  # it records through the server: no SQLAlchemy, no boto3
              "assert not [m for m in sys.modules if m.startswith(('sqlalchemy', 'boto3'))], sorted(sys.modules)\n"
              # over http.client: no httpx (nor its urllib.request), no tenacity until a request fails
              "assert not [m for m in sys.modules if m.split('.')[0] in {'httpx', 'httpcore', 'tenacity'} "
              "or m == 'urllib.request'], sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", driver], check=True)


def test_the_worker_entry_imports_no_client_library():
    """A worker in a container imports the package, its storage client (presigned URLs over http.client) and
    the user's module: no botocore, SQLAlchemy, httpx or docker, no tenacity until a request fails, no
    cloudpickle while its values are plain data."""
    code = ("import sys, sematic_k8s.worker\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'boto3', 'botocore', 'sqlalchemy', 'httpx',"
            " 'docker', 'kubernetes', 'tenacity', 'cloudpickle', 'pickle', 'rich', 'click'})\n"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_errors_a_user_catches_are_exported():
    for cls in (sk.FuncError, sk.ResolutionFailed, sk.ResolutionCanceled, sk.InfrastructureError):
        assert issubclass(cls, Exception) and cls.__module__ == "sematic_k8s.errors"
    assert sk.__version__
