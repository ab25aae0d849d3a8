"""A small typed S3 client for the object store (models, batch input/output).

:class:`ObjectStore` wraps one miniopy-async (MinIO's async SDK) client: ``head``, ``get``,
``get_range``, ``stream``, ``put``, ``list``, ``delete``, ``create_bucket``.
:class:`StoreConfig` says where the store is and which credentials to use (from the environment
or a Secret's ``data``); :func:`parse_s3_uri` splits an ``s3://bucket/prefix`` URI. Any
S3-compatible server works (SeaweedFS in tests and ``make dev``).
"""

from tokenfleet.store.client import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StoreConfig,
    StoreCredentials,
    StoreError,
    parse_s3_uri,
)

__all__ = [
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "StoreConfig",
    "StoreCredentials",
    "StoreError",
    "parse_s3_uri",
]
