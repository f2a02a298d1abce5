"""Which project files go into an image: built-in excludes plus ``.dockerignore`` rules (Docker's syntax)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Directory names never copied, at any depth; plus "build"/"dist" at the project root only.
EXCLUDED_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache",
                           ".tox", ".nox", ".eggs", "node_modules", ".ipynb_checkpoints", ".idea", ".vscode",
                           ".hypothesis", ".cache"})
EXCLUDED_DIR_GLOBS = (".venv*", "venv", "*.egg-info")
ROOT_ONLY_EXCLUDED_DIRS = frozenset({"build", "dist"})
EXCLUDED_FILE_GLOBS = ("*.pyc", "*.pyo", ".DS_Store", ".dockerignore")


def excluded_dir(rel: str) -> bool:
    """True for a directory (relative POSIX path) the built-in rules leave out."""
    name = rel.rsplit("/", 1)[-1]
    return (name in EXCLUDED_DIRS or any(fnmatch.fnmatchcase(name, g) for g in EXCLUDED_DIR_GLOBS)
            or ("/" not in rel and name in ROOT_ONLY_EXCLUDED_DIRS))


def excluded_file(rel: str) -> bool:
    """True for a file (relative POSIX path) the built-in rules leave out."""
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(name, g) for g in EXCLUDED_FILE_GLOBS)


def _translate(pattern: str) -> str:
    """A Go ``filepath.Match`` pattern with Docker's ``**`` extension, as a regular expression."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1
                    out.append("(?:.*/)?")
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 2)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:j]
                if body[:1] in ("^", "!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _clean(pattern: str) -> str:
    parts: list[str] = []
    for part in pattern.strip("/").split("/"):
        if part in ("", "."):
            continue
        if part == ".." and parts:
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


@dataclass(frozen=True)
class Rule:
    pattern: str
    regex: re.Pattern[str]
    negated: bool


class DockerIgnore:
    """``.dockerignore`` rules: the last matching rule wins; a rule matching a directory covers what is in it."""

    def __init__(self, lines: Iterable[str] = ()) -> None:
        self.rules: list[Rule] = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = _clean(line[1:].strip() if negated else line)
            if pattern:
                self.rules.append(Rule(pattern, re.compile(_translate(pattern) + r"\Z"), negated))

    @classmethod
    def load(cls, root: Path) -> DockerIgnore:
        """The rules of ``root/.dockerignore``; none when it does not exist."""
        path = root / ".dockerignore"
        return cls(path.read_text().splitlines()) if path.is_file() else cls()

    @property
    def has_negations(self) -> bool:
        return any(r.negated for r in self.rules)

    def ignored(self, rel: str) -> bool:
        """True when the relative POSIX path ``rel`` is excluded."""
        parts = rel.split("/")
        prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
        result = False
        for rule in self.rules:
            if any(rule.regex.match(p) for p in prefixes):
                result = not rule.negated
        return result
