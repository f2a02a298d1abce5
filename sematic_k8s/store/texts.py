"""The one rule for NUL characters in the text a write stores, in the store itself, on SQLite as on PostgreSQL: every
write is checked here once, an embedded store's (no server) and the server's alike (the server answers the refusal,
:class:`NulText`, with a 422 naming the body field; its schemas do not check NUL characters). Was: SQLite kept a NUL
(its ``length()`` stops at it), PostgreSQL refused the whole write naming no field.

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


class NulText(ValueError):
    """A record's text holding a NUL character: ``field`` of ``record`` (its section of the batch and its key there:
    an id, or a new resolution's index; None for a label), said as the store says it (``new_runs[<id>].func_name
    holds a NUL character ...``, ``note holds ...``). :attr:`path` is the field's place in the write's JSON."""

    def __init__(self, record: tuple[str, str] | None, field: str) -> None:
        self.record, self.field = record, field
        where = f"{record[0]}[{record[1]}].{field}" if record else field
        super().__init__(f"{where} {limits.NUL_HELD}")

    @property
    def path(self) -> str:
        """``new_runs.<id>.func_name``, ``new_resolutions.0.root_func_path``, ``note``."""
        return ".".join([*(self.record or ()), self.field])


def refuse_nul(record: tuple[str, str] | None, row: Mapping[str, Any], names: Iterable[str]) -> None:
    """:class:`NulText` for the first of ``row``'s fields ``names`` whose text holds a NUL character."""
    for name in names:
        value = row.get(name)
        if value.__class__ is str and "\x00" in value:
            raise NulText(record, name)


def checked(batch: Batch) -> Batch:
    """``batch`` as the store writes it: :class:`NulText`, nothing written, naming the first of its records' text fields
    that holds a NUL character (``new_runs[<id>].func_name holds a NUL character (\\u0000) ...``); a resolution's
    ``error`` holding one written with ``\\x00`` in its place (in a copy: the caller's batch is left as it is)."""
    for section, rows, names in (("new_runs", batch.new_runs, RUN_TEXTS), ("run_updates", batch.run_updates, RUN_TEXTS),
                                 ("clones", batch.clones, RUN_TEXTS), ("artifacts", batch.artifacts, ARTIFACT_TEXTS),
                                 ("resolution_updates", batch.resolution_updates, RESOLUTION_TEXTS)):
        for key, row in rows.items():
            refuse_nul((section, key), row, names)
    for i, row in enumerate(batch.new_resolutions):
        refuse_nul(("new_resolutions", str(i)), row, RESOLUTION_TEXTS)
    for key, hit in batch.hits.items():
        refuse_nul(("hits", key), {n: getattr(hit, n, None) for n in RUN_TEXTS}, RUN_TEXTS)
    if not any(_nul_error(r) for r in [*batch.new_resolutions, *batch.resolution_updates.values()]):
        return batch
    return dataclasses.replace(batch, new_resolutions=[_escaped(r) for r in batch.new_resolutions],
                               resolution_updates={k: _escaped(r) for k, r in batch.resolution_updates.items()})


def _nul_error(row: Mapping[str, Any]) -> bool:
    error = row.get(ESCAPED)
    return error.__class__ is str and "\x00" in error


def _escaped(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, ESCAPED: limits.text_field(row[ESCAPED])} if _nul_error(row) else row
