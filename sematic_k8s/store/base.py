"""The one interface every metadata store implements (SQL here; HTTP through the server)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from sematic_k8s.store.records import ArtifactRecord, Batch, Formats, ResolutionRecord, RunRecord


class Store(Protocol):
    """Metadata persistence: Resolutions, Runs, Artifacts."""

    def write(self, batch: Batch, *, canceled: set[str] | None = None) -> None:
        """Apply a batch of inserts and updates atomically. ``canceled``, when given, gets the ids of the
        resolutions whose failed end the batch holds and the store recorded canceled instead: a cancel accepted
        before it landed wins (:func:`~sematic_k8s.store.guards.kept_cancels`)."""

    def take_over(self, resolution_id: str) -> int:
        """Become the resolution's only driver: its driver epoch bumped atomically, the new one returned, for
        ``Batch.fence`` on every write that follows (those of earlier drivers are refused from now on)."""

    def kept_secret(self, name: str) -> bytes | None:
        """The random secret the database keeps as ``name`` for the processes that write it directly, made on first
        need (the same for each of them, and after a restart); None where this store does not give it (the server's)."""

    def get_run(self, run_id: str) -> RunRecord | None: ...

    def list_runs(self, *, root_id: str | None = None, state: str | None = None, func: str | None = None,
                  limit: int = 100, offset: int = 0, id_prefix: str | None = None,
                  newest_first: bool = False) -> list[RunRecord]: ...

    def run_counts(self, root_id: str) -> dict[str, int]:
        """How many runs of a resolution are in each state."""

    def runs_of_root(self, root_id: str) -> list[RunRecord]: ...

    def get_resolution(self, resolution_id: str) -> ResolutionRecord | None: ...

    def list_resolutions(self, *, state: str | None = None, limit: int = 100, offset: int = 0,
                         id_prefix: str | None = None) -> list[ResolutionRecord]: ...

    def get_artifact(self, artifact_id: str) -> ArtifactRecord | None: ...

    def artifacts(self, ids: Iterable[str]) -> list[ArtifactRecord]: ...

    def artifact_formats(self, ids: Iterable[str]) -> dict[str, Formats]:
        """``{id: (format, type_name, inline bytes, size)}`` of those of these artifacts recorded: what reading their
        values takes, and checking their stored bytes (size None: not known), without the summaries (lighter than
        :meth:`artifacts`)."""

    def find_cached(self, cache_key: str) -> RunRecord | None:
        """The most recent resolved Run with this cache key."""

    def find_cached_many(self, cache_keys: Iterable[str]) -> dict[str, RunRecord]:
        """:meth:`find_cached` for many keys in one look-up: ``{cache key: run}`` for the keys that hit (a run
        may carry only what a hit uses: ids, func, state, output, source hash)."""

    def cancel_requested(self, resolution_id: str) -> bool:
        """Whether someone asked this Resolution to cancel (its state is "canceling")."""

    def request_cancel(self, resolution_id: str) -> str | None:
        """Ask a created or running Resolution to cancel; its state after the request (None: unknown id)."""

    def label_resolution(self, resolution_id: str, *, add: Iterable[str] = (), remove: Iterable[str] = (),
                         note: str | None = None, set_note: bool = False,
                         labels_version: int | None = None) -> ResolutionRecord | None:
        """Add and remove tags and, with ``set_note``, replace the note; the resolution as it now is (None:
        unknown id). ``labels_version``: the resolution's ``labels_version`` the change was made to (as read);
        LabelsChanged, and nothing changed, when the labels changed since and the change is not already in effect."""

    def close(self) -> None: ...
