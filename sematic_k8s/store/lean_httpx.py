"""httpx without its command line: ``import httpx`` also imports ``httpx._main`` (its ``httpx`` command,
with rich's console, click and pygments: a quarter of a driver's start-up) whenever those are installed,
as they are here. A driver, a worker and a client never run that command, so it is left out."""

from __future__ import annotations

import sys

if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
    sys.modules["httpx._main"] = None  # type: ignore[assignment]  # None: "from ._main import main" fails
    try:
        import httpx
    finally:
        del sys.modules["httpx._main"]  # `python -m httpx` and the like still import it when asked
else:
    import httpx

__all__ = ["httpx"]
