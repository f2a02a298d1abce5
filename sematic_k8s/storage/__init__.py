"""Artifact storage: bytes by key (artifact payloads, content-addressed; run logs; workers' outcome documents).

*Storage* keeps bytes; the *store* (:mod:`sematic_k8s.store`) keeps records about them. Every storage
implements :class:`~sematic_k8s.storage.base.Storage` (put, get, exists, append): a local directory
(:mod:`.local`) or an S3 bucket (:mod:`.s3`), chosen from a URL (``file:///path``, ``s3://bucket/prefix``)
by :func:`~sematic_k8s.storage.urls.storage_from_url` through :data:`sematic_k8s.backends.STORAGES`.
"""
