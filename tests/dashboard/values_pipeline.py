"""Values of many kinds for the dashboard's Run panel: records, a dataframe, a figure, PNG and SVG bytes, a
nested dict, a long text. Importable by module name (tests/ is on the path)."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import sematic_k8s as sk

SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40"><rect width="120" height="40" '
       'fill="#2f6fdf"/><text x="10" y="25" fill="#fff">sematic</text></svg>')


def png_bytes(width: int = 24, height: int = 12) -> bytes:
    """A small valid PNG (solid orange), made without any imaging library."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\xff\x88\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@sk.func
def records(n: int) -> list[dict]:
    print("\n".join(f"epoch {i}: loss {1 / (i + 1):.3f}" for i in range(n)))
    return [{"epoch": i, "loss": round(1 / (i + 1), 3), "split": "train" if i % 2 else "test"} for i in range(n)]


@sk.func
def frame(rows: list[dict]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows)


@sk.func
def figure(rows: list[dict]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([r["epoch"] for r in rows], [r["loss"] for r in rows])
    plt.close(fig)
    return fig


@sk.func
def picture() -> bytes:
    return png_bytes()


@sk.func
def drawing() -> str:
    return SVG


@sk.func
def config(rows: list[dict]) -> dict:
    return {"model": {"layers": [64, 32, 1], "activation": "relu", "optimizer": {"name": "adam", "lr": 0.001}},
            "epochs": len(rows), "notes": "x" * 50}


@sk.func
def essay(n: int) -> str:
    return " ".join(f"word{i}" for i in range(n))


@sk.func
def report(n: int) -> dict:
    rows = records(n)
    return {"frame": frame(rows), "figure": figure(rows), "png": picture(), "svg": drawing(), "config": config(rows),
            "essay": essay(800)}
