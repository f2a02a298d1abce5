"""Local artifact storage: atomic, content-addressed puts, and keys that cannot escape the root."""

from __future__ import annotations

import pytest

from sematic_k8s.storage.local import LocalStorage


def test_put_get_exists_append(tmp_path):
    s = LocalStorage(tmp_path)
    s.put("artifacts/ab/abc", b"1")
    s.put("artifacts/ab/abc", b"2")  # content-addressed: an existing key is never overwritten
    assert s.get("artifacts/ab/abc") == b"1" and s.exists("artifacts/ab/abc")
    assert not list(tmp_path.rglob("*.tmp"))
    s.append("logs/r.log", b"a")
    s.append("logs/r.log", b"b")
    assert s.get("logs/r.log") == b"ab"
    with pytest.raises(KeyError):
        s.get("artifacts/none")


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../x", "a//b", "./a"])
def test_keys_cannot_escape_the_root(tmp_path, key):
    with pytest.raises(ValueError, match="not a plain relative path"):
        LocalStorage(tmp_path / "root").put(key, b"x")
