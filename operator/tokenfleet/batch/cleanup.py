"""What the dispatcher does when an InferenceBatch is deleted: its finalizer.

Every batch the dispatcher serves carries the finalizer ``batch.tokenfleet.io/state-cleanup``.
On ``kubectl delete``:

1. a batch still running is cancelled first (its runner sees the deletion: nothing new is sent,
   what finished is written to ``output.jsonl``, the rest to ``errors.jsonl``);
2. its progress, ``<output>/.state/<uid>/`` (manifest, parts, final record), is removed from
   the store; ``output.jsonl`` and ``errors.jsonl`` are the user's and stay;
3. the finalizer is removed.

Deletion is never blocked for long: when the store cannot be reached (or the credentials
Secret is gone), the dispatcher retries until ``cleanup_seconds`` after the deletion began,
then removes the finalizer anyway with a Warning Event ``StateNotRemoved`` on the batch naming
the prefix left behind and the last error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

__all__ = [
    "FINALIZER",
    "deletion_age",
    "has_finalizer",
    "remove_prefix",
    "with_finalizer",
    "without_finalizer",
]

FINALIZER = "batch.tokenfleet.io/state-cleanup"


class _Listed(Protocol):
    @property
    def key(self) -> str: ...


class PrefixStore(Protocol):
    async def list(self, bucket: str, prefix: str = "") -> Sequence[_Listed]: ...

    async def delete(self, bucket: str, key: str) -> None: ...


def has_finalizer(meta: Mapping[str, Any]) -> bool:
    return FINALIZER in (meta.get("finalizers") or ())


def with_finalizer(meta: Mapping[str, Any]) -> list[str]:
    """The object's finalizers with ours added (order kept)."""
    current = [str(f) for f in meta.get("finalizers") or ()]
    return current if FINALIZER in current else [*current, FINALIZER]


def without_finalizer(meta: Mapping[str, Any]) -> list[str]:
    return [str(f) for f in meta.get("finalizers") or () if f != FINALIZER]


def deletion_age(meta: Mapping[str, Any], now: datetime) -> float:
    """Seconds since the object's deletionTimestamp (0 when unset or unreadable)."""
    stamp = str(meta.get("deletionTimestamp") or "")
    if not stamp:
        return 0.0
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (now - when).total_seconds())


async def remove_prefix(store: PrefixStore, bucket: str, prefix: str) -> int:
    """Delete every object under ``prefix`` (which must end with '/'); returns how many."""
    if not prefix.endswith("/") or prefix.strip("/") == "":
        raise ValueError(f"refusing to remove prefix {prefix!r}: not a state folder")
    keys = [o.key for o in await store.list(bucket, prefix)]
    for key in keys:
        await store.delete(bucket, key)
    return len(keys)
