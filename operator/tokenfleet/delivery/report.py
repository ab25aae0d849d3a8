"""The ``tokenfleet.io/model-cache`` Node annotation: what a node's model cache holds and does.

Compact JSON, written by the node's cache (``tokenfleet modelcache``) on a change only::

    {"v":1,"budget":21474836480,"used":8053063680,
     "models":{"tinyllama-int4":{"s":"Ready","d":"3f2a9c01e4b2d7aa","b":4026531840},
               "qwen-int4":{"s":"Fetching","d":"aa00...","b":104857600,"t":4026531840},
               "bad-int4":{"s":"Failed","d":"...","r":"DigestMismatch","m":"..."}}}

``s`` state, ``d`` the first 16 hex digits of the variant digest it is for, ``b`` bytes on disk
(fetched so far while Fetching), ``t`` total bytes, ``r``/``m`` reason and message. A node without
the annotation has no model cache: its runtime's repository is managed outside tokenfleet.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "DIGEST_PREFIX",
    "MODEL_CACHE_ANNOTATION",
    "CacheEntry",
    "CacheReport",
    "CacheState",
    "decode_report",
    "encode_report",
]

MODEL_CACHE_ANNOTATION: Final = "tokenfleet.io/model-cache"
DIGEST_PREFIX: Final = 16
MAX_MESSAGE: Final = 300


class CacheState(StrEnum):
    WAITING = "Waiting"
    """Wanted, but a download may not start now (the reason says why)."""
    FETCHING = "Fetching"
    VERIFYING = "Verifying"
    READY = "Ready"
    """Verified and in the runtime's model repository."""
    FAILED = "Failed"
    """Refused: never placed in the repository (DigestMismatch, NoDigest, NotInStore, ...)."""


@dataclass(frozen=True, slots=True)
class CacheEntry:
    state: CacheState
    digest: str
    """First :data:`DIGEST_PREFIX` hex digits of the digest this entry is for."""
    bytes: int = 0
    total: int | None = None
    reason: str | None = None
    message: str | None = None

    def matches(self, sha256: str | None) -> bool:
        return sha256 is not None and sha256[:DIGEST_PREFIX] == self.digest


@dataclass(frozen=True, slots=True)
class CacheReport:
    budget_bytes: int
    used_bytes: int
    models: Mapping[str, CacheEntry] = field(default_factory=dict)

    def ready(self) -> frozenset[tuple[str, str]]:
        """``(model, digest prefix)`` of every Ready model."""
        return frozenset(
            (m, e.digest) for m, e in self.models.items() if e.state is CacheState.READY
        )

    def holds(self, model: str, sha256: str | None) -> bool:
        entry = self.models.get(model)
        return entry is not None and entry.state is CacheState.READY and entry.matches(sha256)

    def fetching_bytes(self, model: str, sha256: str | None) -> int:
        """Bytes already fetched of that build (0 when none)."""
        entry = self.models.get(model)
        if entry is None or not entry.matches(sha256):
            return 0
        return entry.bytes


def encode_report(report: CacheReport) -> str:
    models: dict[str, dict[str, Any]] = {}
    for name in sorted(report.models):
        e = report.models[name]
        item: dict[str, Any] = {"s": e.state.value, "d": e.digest, "b": e.bytes}
        if e.total is not None:
            item["t"] = e.total
        if e.reason:
            item["r"] = e.reason
        if e.message:
            item["m"] = e.message[:MAX_MESSAGE]
        models[name] = item
    doc = {"v": 1, "budget": report.budget_bytes, "used": report.used_bytes, "models": models}
    return json.dumps(doc, separators=(",", ":"), sort_keys=False)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def decode_report(text: str | None) -> CacheReport | None:
    """The report in an annotation value; ``None`` when absent or unreadable (the Node parser
    treats a present but unreadable report as holding nothing, never as "no cache")."""
    if not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("v") != 1:
        return None
    raw_models = doc.get("models")
    models: dict[str, CacheEntry] = {}
    if isinstance(raw_models, dict):
        for name, item in raw_models.items():
            if not isinstance(name, str) or not isinstance(item, dict):
                continue
            try:
                state = CacheState(str(item.get("s")))
            except ValueError:
                continue
            digest = item.get("d")
            if not isinstance(digest, str):
                continue
            reason, message = item.get("r"), item.get("m")
            models[name] = CacheEntry(
                state,
                digest,
                _int(item.get("b")) or 0,
                _int(item.get("t")),
                reason if isinstance(reason, str) else None,
                message if isinstance(message, str) else None,
            )
    return CacheReport(_int(doc.get("budget")) or 0, _int(doc.get("used")) or 0, models)
