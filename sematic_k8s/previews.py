"""How values that only pickle can keep look to people: a table for a dataframe, a picture for a figure.

A preview is JSON stored in the artifact's summary (``summary["preview"]``), made once by whoever serializes
the value, so the dashboard shows it without ever unpickling anything. Bounded in size; None when a value has
no preview or making one fails.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

MAX_ROWS = 50
MAX_COLUMNS = 30
MAX_IMAGE_BYTES = 400_000


def preview(value: Any) -> dict[str, Any] | None:
    """``{"kind": "table", "columns", "rows", "shape"}`` for a pandas DataFrame, ``{"kind": "image", "mime",
    "base64"}`` for a matplotlib Figure, else None."""
    t = type(value)
    try:
        if t.__name__ == "DataFrame" and t.__module__.startswith("pandas"):
            return _table(value)
        if t.__name__ == "Figure" and t.__module__.startswith("matplotlib"):
            return _figure(value)
    except Exception:  # a preview is a nicety: never fail a run for it
        return None
    return None


def _cell(v: Any) -> Any:
    try:
        json.dumps(v, allow_nan=False)
        return v
    except (TypeError, ValueError):
        return str(v)


def _table(df: Any) -> dict[str, Any]:
    head = df.iloc[:MAX_ROWS, :MAX_COLUMNS]
    rows = [[_cell(v.item() if hasattr(v, "item") else v) for v in row] for row in head.itertuples(index=False)]
    return {"kind": "table", "columns": [str(c) for c in head.columns], "rows": rows, "shape": list(df.shape)}


def _figure(fig: Any) -> dict[str, Any] | None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    data = buf.getvalue()
    if len(data) > MAX_IMAGE_BYTES:
        return None
    return {"kind": "image", "mime": "image/png", "base64": base64.b64encode(data).decode()}
