"""Resolvers drive a Future graph to values (DESIGN.md "Resolver"). They differ only in which store,
storage and executor they wire together; the same loop resolves every pipeline.

- :mod:`.base`: ``Resolver``, holding the :class:`~sematic_k8s.specs.ResolutionSettings` every resolver takes.
- :mod:`.local`: ``LocalResolver``, the embedded default (SQLite or the server, a local directory, in-process).
- :mod:`.cloud`: ``CloudResolver``: builds an image, launches a driver, follows the resolution.
- :mod:`.driven`: what that driver does with its DriverSpec.
- :mod:`.planning`: the starting graph and Run records (a new root, a rerun, a resume); :mod:`.recorder`: the
  batch of records and the artifacts a resolution writes.
- :mod:`.loop`: ``ResolutionLoop``, which drives the planned graph: starts runs, takes outcomes, retries,
  fails, cancels, and records every change in batched writes.
- :mod:`.cache_hits`: the loop's cache look-ups, one batched query per planning wave, whose hits are resolved
  together.
"""
