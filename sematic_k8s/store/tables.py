"""The store's tables, as SQLAlchemy models: what the Alembic migrations in ``migrations/`` create and upgrade,
and what :class:`~sematic_k8s.store.sql.SqlStore` (and the server's queries) read and write."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

CANCELING = "canceling"  # a Resolution asked to cancel, until its loop records "canceled"
# graph's names (the store sits below graph)
RUNNING, RESOLVED, FAILED, CANCELED = "running", "resolved", "failed", "canceled"
LIVE = (RUNNING, CANCELING)  # a Resolution whose process should be heartbeating
ENDED = (RESOLVED, FAILED, CANCELED)
AS_ASKED = "; canceled as asked"  # after a failure's words: the end of a resolution whose accepted cancel won
UNFINISHED_RUNS = ("created", "scheduled", RUNNING)
# the runs a cache look-up can hit (ix_runs_cache_hits)
CACHE_HITS_WHERE = "cache_key IS NOT NULL AND state = 'resolved' AND cached_from IS NULL"
CACHE_HITS_COLUMNS = ("cache_key", "state", "cached_from", "ended_at", "id", "output_id", "source_hash", "owner")


class Base(DeclarativeBase):
    pass


class ResolutionRow(Base):
    __tablename__ = "resolutions"
    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    root_func_path: Mapped[str] = mapped_column(sa.String(512))
    state: Mapped[str] = mapped_column(sa.String(16), index=True)
    settings: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    rerun_of: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    image: Mapped[str | None] = mapped_column(sa.String(512), nullable=True)
    build_hash: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    created_at: Mapped[Any] = mapped_column(sa.DateTime, index=True)
    ended_at: Mapped[Any] = mapped_column(sa.DateTime, nullable=True)
    tags: Mapped[Any] = mapped_column(sa.JSON, nullable=True)
    note: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    heartbeat_at: Mapped[Any] = mapped_column(sa.DateTime, nullable=True)
    # fencing (SqlStore.take_over): bumped by each driver that takes it over, and when; not in ResolutionRecord
    driver_epoch: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    driver_epoch_at: Mapped[Any] = mapped_column(sa.DateTime, nullable=True)
    # ordered writes (Batch.sequence): the newest sequence applied within the driver epoch, 0 after a takeover
    driver_seq: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    # people's labels (SqlStore.label_resolution): one more for each change of the tags or the note
    labels_version: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    # the API key that recorded it, set by the server from the writer's credentials, never by a record (None: embedded
    # or local mode, or recorded before owners were, migration 0012); not in ResolutionRecord
    owner: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    # its end no driver recorded (marked dead, liveness.expire_silent): the copies of its workers' tasks may be left
    # in storage; True until the server's sweeper deleted them (None: nothing to delete; migration 0013)
    tasks_left: Mapped[bool | None] = mapped_column(sa.Boolean, nullable=True, index=True)
    # a claim's holder (the server's rerun action recorded it, state "created"): the server process launching its
    # driver, which beats its heartbeat_at until the launch ends (liveness.silent; None once the driver is started, or
    # for any other resolution; migration 0015); set by the server only, not in ResolutionRecord
    held_by: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)


class RunRow(Base):
    __tablename__ = "runs"
    # cache look-ups (find_hits, find_cached...): the runs a key can hit, with what a hit takes of them, in the
    # index alone, its owner included; hits themselves and runs without a key are left out of it (migrations 0007, 0012)
    __table_args__ = (sa.Index("ix_runs_cache_hits", *CACHE_HITS_COLUMNS, sqlite_where=sa.text(CACHE_HITS_WHERE),
                               postgresql_where=sa.text(CACHE_HITS_WHERE)),)
    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    root_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    parent_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    func_path: Mapped[str] = mapped_column(sa.String(512), index=True)
    func_name: Mapped[str] = mapped_column(sa.String(256))
    state: Mapped[str] = mapped_column(sa.String(16), index=True)
    input_refs: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    inputs: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    output_ref: Mapped[Any] = mapped_column(sa.JSON, nullable=True)
    output_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    cache_key: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)  # ix_runs_cache_hits
    cached_from: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    original_run_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    source_hash: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    source_file: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    source_text: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    settings: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    error: Mapped[Any] = mapped_column(sa.JSON, nullable=True)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    notes: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    created_at: Mapped[Any] = mapped_column(sa.DateTime)
    started_at: Mapped[Any] = mapped_column(sa.DateTime, nullable=True)
    ended_at: Mapped[Any] = mapped_column(sa.DateTime, nullable=True)
    # the API key that recorded it (as ResolutionRow.owner): a cache look-up through the server hits only the asker's
    # runs and those of the keys its operator trusts (cache_reads.Trust); not in RunRecord
    owner: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)


class ArtifactRow(Base):
    __tablename__ = "artifacts"
    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    format: Mapped[str] = mapped_column(sa.String(16))
    type_name: Mapped[str] = mapped_column(sa.String(512))
    summary: Mapped[Any] = mapped_column(sa.JSON, nullable=True)
    size: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[Any] = mapped_column(sa.DateTime)
    inline: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)  # a small one's bytes


class KeptSecretRow(Base):
    """A secret the database keeps for the processes that write it directly (:mod:`~sematic_k8s.store.kept`);
    migration 0016. No route of the server reads it."""

    __tablename__ = "kept_secrets"
    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)  # its name
    value: Mapped[str] = mapped_column(sa.String(128))  # hex
