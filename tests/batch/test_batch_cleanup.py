"""The finalizer's pure parts (tokenfleet.batch.cleanup): the finalizer list edits, the deletion
age the bound is measured by, and the prefix guard (the store side runs for real in
e2e/test_batch_finalizer.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from tokenfleet.batch.cleanup import (
    FINALIZER,
    deletion_age,
    has_finalizer,
    remove_prefix,
    with_finalizer,
    without_finalizer,
)
from tokenfleet.batch.layout import Layout


def test_finalizer_is_added_once_and_removed_alone() -> None:
    meta = {"finalizers": ["other.io/keep"]}
    assert not has_finalizer(meta)
    added = with_finalizer(meta)
    assert added == ["other.io/keep", FINALIZER]
    assert with_finalizer({"finalizers": added}) == added
    assert has_finalizer({"finalizers": added})
    assert without_finalizer({"finalizers": added}) == ["other.io/keep"]
    assert with_finalizer({}) == [FINALIZER] and without_finalizer({}) == []


def test_deletion_age() -> None:
    now = datetime(2026, 12, 2, 12, 0, 30, tzinfo=UTC)
    assert deletion_age({}, now) == 0.0
    assert deletion_age({"deletionTimestamp": "2026-12-02T12:00:00Z"}, now) == 30.0
    assert deletion_age({"deletionTimestamp": "garbage"}, now) == 0.0
    future = (now + timedelta(seconds=5)).isoformat()
    assert deletion_age({"deletionTimestamp": future}, now) == 0.0


@dataclass
class _Obj:
    key: str


class _Keys:
    """A dict of keys with the two calls remove_prefix makes (pure logic under test)."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = set(keys)

    async def list(self, bucket: str, prefix: str = "") -> list[_Obj]:
        return [_Obj(k) for k in sorted(self.keys) if k.startswith(prefix)]

    async def delete(self, bucket: str, key: str) -> None:
        self.keys.discard(key)


def test_only_the_state_prefix_goes() -> None:
    layout = Layout("b", "team/run1", "uid-1")
    keys = _Keys(
        [
            "team/run1/output.jsonl",
            "team/run1/errors.jsonl",
            layout.manifest_key,
            layout.final_key,
            layout.part_key("r", 0),
            "team/run1/.state/uid-2/manifest.json",  # another batch writing there
        ]
    )
    assert asyncio.run(remove_prefix(keys, "b", layout.state_prefix)) == 3
    assert keys.keys == {
        "team/run1/output.jsonl",
        "team/run1/errors.jsonl",
        "team/run1/.state/uid-2/manifest.json",
    }
    for bad in ("", "/", "team/run1"):
        with pytest.raises(ValueError, match="refusing"):
            asyncio.run(remove_prefix(keys, "b", bad))
