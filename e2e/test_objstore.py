"""The object store for tests and `make dev`: a real SeaweedFS S3 gateway on loopback, driven
through the product's client (tokenfleet.store, on MinIO's async SDK)."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from e2e.objstore import ObjectStoreServer
from tokenfleet.store import (
    ObjectNotFound,
    ObjectStore,
    StoreConfig,
    StoreCredentials,
    StoreError,
)


async def test_put_get_list_and_range_round_trip(objstore: ObjectStoreServer) -> None:
    bucket = f"smoke-{uuid.uuid4().hex[:8]}"
    blob = os.urandom(3 * (1 << 20) + 123)  # several chunks, not a chunk multiple
    async with ObjectStore(objstore.store_config()) as store:
        await store.create_bucket(bucket)
        await store.create_bucket(bucket)  # idempotent
        etag = await store.put(bucket, "models/m/1/weights.bin", blob)
        await store.put(bucket, "models/m/config.pbtxt", b'name: "m"\n')
        await store.put(bucket, "other/x", b"x")
        assert etag

        info = await store.head(bucket, "models/m/1/weights.bin")
        assert info is not None and info.size == len(blob)
        assert await store.head(bucket, "models/m/absent") is None

        got = await store.get(bucket, "models/m/1/weights.bin")
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(blob).hexdigest()

        # range GETs: the middle, and from an offset to the end (a resumed download)
        assert (
            await store.get_range(bucket, "models/m/1/weights.bin", 1000, 1999) == blob[1000:2000]
        )
        offset = len(blob) - 777_777
        tail = await store.get_range(bucket, "models/m/1/weights.bin", offset)
        assert tail == blob[offset:]

        listed = await store.list(bucket, "models/m/")
        assert [(o.key, o.size) for o in listed] == [
            ("models/m/1/weights.bin", len(blob)),
            ("models/m/config.pbtxt", 10),
        ]

        with pytest.raises(ObjectNotFound):
            await store.get(bucket, "models/m/absent")
        await store.delete(bucket, "other/x")
        assert await store.head(bucket, "other/x") is None


async def test_wrong_secret_key_is_refused(objstore: ObjectStoreServer) -> None:
    bad = StoreConfig(
        objstore.endpoint, StoreCredentials(objstore.access_key, objstore.secret_key + "x")
    )
    async with ObjectStore(bad) as store:
        with pytest.raises(StoreError) as info:
            await store.list("anything", "")
    assert info.value.code in ("SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId")
