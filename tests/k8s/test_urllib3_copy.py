"""``sematic_k8s.k8s.client._connect_told`` is a copy of urllib3's ``create_connection`` (with a step of its own: the
socket told to a stop before its connect). An upgrade of urllib3 that changes that function, or the token its
connections pass for "the socket's default timeout", fails here, rather than leaving the copy behind unseen."""

from __future__ import annotations

import hashlib
import inspect

from urllib3.util import connection
from urllib3.util.timeout import Timeout

# sha256 of inspect.getsource(urllib3.util.connection.create_connection), urllib3 2.8.0 (the version copied)
COPIED = "ebc7b96a8ed79d815d48d20d810fdd996707c11251ba795d900fc648db8f4a25"


def test_urllib3s_create_connection_is_the_one_connect_told_copies() -> None:
    digest = hashlib.sha256(inspect.getsource(connection.create_connection).encode()).hexdigest()
    assert digest == COPIED, (
        "urllib3's create_connection changed since sematic_k8s/k8s/client.py's _connect_told copied it: re-check that "
        f"copy against the new one (its steps, its errors), then set COPIED here to {digest}")


def test_the_default_timeout_token_connect_told_compares_with_is_the_one_urllib3s_own_compares_with() -> None:
    default = inspect.signature(connection.create_connection).parameters["timeout"].default
    assert default is Timeout.DEFAULT_TIMEOUT, (
        "urllib3's create_connection no longer takes Timeout.DEFAULT_TIMEOUT for the socket's default: re-check "
        "sematic_k8s/k8s/client.py's _connect_told (it compares the timeout with it)")
