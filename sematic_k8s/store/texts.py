"""One rule for NUL characters in the text a write stores (:func:`sematic_k8s.limits.no_nul`), in the store itself:
an embedded store (no server) refuses what the server's schemas refuse, on SQLite as on PostgreSQL. Was: SQLite kept
a NUL (its ``length()`` stops at it), PostgreSQL refused the whole write naming no field.

Every text column of the tables is checked (a new one too): refused naming the record and the field, before anything
is written; a resolution's ``error`` alone is kept, each NUL written as ``\\x00`` (:func:`~sematic_k8s.limits.
text_field`): refusing it would lose the failure it records. JSON columns (a run's error, settings, notes) keep their
values as they are."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from sematic_k8s import limits
from sematic_k8s.store.records import Batch
from sematic_k8s.store.tables import ArtifactRow, Base, ResolutionRow, RunRow

ESCAPED = "error"  # a resolution's error: kept, escaped


def _texts(model: type[Base], *leave_out: str) -> tuple[str, ...]:
    """The names of ``model``'s text columns (``String`` and ``Text``), but ``leave_out``."""
    return tuple(c.name for c in model.__table__.columns if isinstance(c.type, sa.String) and c.name not in leave_out)


RUN_TEXTS, RESOLUTION_TEXTS, ARTIFACT_TEXTS = _texts(RunRow), _texts(ResolutionRow, ESCAPED), _texts(ArtifactRow)


def refuse_nul(where: str, row: Mapping[str, Any], names: Iterable[str]) -> None:
    """ValueError ("``where``.func_name holds a NUL character ...", or "note ..." where ``where`` is "") for the
    first of ``row``'s fields ``names`` whose text holds a NUL character."""
    for name in names:
        value = row.get(name)
        if value.__class__ is str and "\x00" in value:
            raise ValueError(f"{where}.{name} {limits.NUL_HELD}" if where else f"{name} {limits.NUL_HELD}")


def checked(batch: Batch) -> Batch:
    """``batch`` as the store writes it: ValueError, nothing written, naming the first of its records' text fields
    that holds a NUL character (``new_runs[<id>].func_name holds a NUL character (\\u0000) ...``); a resolution's
    ``error`` holding one written with ``\\x00`` in its place (in a copy: the caller's batch is left as it is)."""
    for section, rows, names in (("new_runs", batch.new_runs, RUN_TEXTS), ("run_updates", batch.run_updates, RUN_TEXTS),
                                 ("clones", batch.clones, RUN_TEXTS), ("artifacts", batch.artifacts, ARTIFACT_TEXTS),
                                 ("resolution_updates", batch.resolution_updates, RESOLUTION_TEXTS)):
        for key, row in rows.items():
            refuse_nul(f"{section}[{key}]", row, names)
    for i, row in enumerate(batch.new_resolutions):
        refuse_nul(f"new_resolutions[{i}]", row, RESOLUTION_TEXTS)
    for key, hit in batch.hits.items():
        refuse_nul(f"hits[{key}]", {n: getattr(hit, n, None) for n in RUN_TEXTS}, RUN_TEXTS)
    if not any(_nul_error(r) for r in [*batch.new_resolutions, *batch.resolution_updates.values()]):
        return batch
    return dataclasses.replace(batch, new_resolutions=[_escaped(r) for r in batch.new_resolutions],
                               resolution_updates={k: _escaped(r) for k, r in batch.resolution_updates.items()})


def _nul_error(row: Mapping[str, Any]) -> bool:
    error = row.get(ESCAPED)
    return error.__class__ is str and "\x00" in error


def _escaped(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, ESCAPED: limits.text_field(row[ESCAPED])} if _nul_error(row) else row
