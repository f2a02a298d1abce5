"""Alembic migrations of the store's database (embedded SQLite and the server's PostgreSQL alike), run by
:func:`sematic_k8s.store.schema.migrate`; one file per revision in ``versions/``."""
