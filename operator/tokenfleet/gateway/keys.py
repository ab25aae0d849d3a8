"""API keys and per-key rate limits (pure).

A key lives in a Kubernetes Secret in the namespace whose jobs it may use, labelled
``tokenfleet.io/api-key: "true"``, with the key in ``data.key`` (base64, as Secrets are) and an
optional rate in the annotation ``tokenfleet.io/requests-per-second`` (a positive number; burst
is twice that, at least 1). The store keeps SHA-256 digests only, never the keys themselves.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "API_KEY_LABEL",
    "RATE_ANNOTATION",
    "ApiKey",
    "KeyStore",
    "TokenBucket",
    "digest",
]

API_KEY_LABEL = "tokenfleet.io/api-key"
RATE_ANNOTATION = "tokenfleet.io/requests-per-second"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A caller: the namespace its key grants, its rate and the Secret it came from."""

    namespace: str
    secret: str
    requests_per_second: float


@dataclass
class TokenBucket:
    """A token bucket on an injected monotonic clock: ``rate`` per second, ``burst`` deep."""

    rate: float
    burst: float
    clock: Callable[[], float]
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self) -> float:
        """0.0 when a request may go now, else the seconds until one may."""
        now = self.clock()
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass
class KeyStore:
    """Keys by digest, from the labelled Secrets; one bucket per Secret."""

    default_rate: float
    clock: Callable[[], float]
    keys: dict[str, ApiKey] = field(default_factory=dict)
    by_secret: dict[tuple[str, str], str] = field(default_factory=dict)
    buckets: dict[tuple[str, str], TokenBucket] = field(default_factory=dict)

    def _parse(self, obj: Mapping[str, Any]) -> tuple[str, ApiKey] | None:
        meta = obj.get("metadata") or {}
        namespace, name = meta.get("namespace"), meta.get("name")
        if not namespace or not name:
            return None
        if str((meta.get("labels") or {}).get(API_KEY_LABEL, "")).lower() != "true":
            return None
        raw = (obj.get("data") or {}).get("key")
        if raw:
            try:
                key = base64.b64decode(str(raw), validate=True).decode().strip()
            except (binascii.Error, UnicodeDecodeError):
                return None
        else:
            key = str((obj.get("stringData") or {}).get("key") or "").strip()
        if not key:
            return None
        rate = self.default_rate
        text = (meta.get("annotations") or {}).get(RATE_ANNOTATION)
        if text is not None:
            try:
                value = float(text)
            except ValueError:
                value = -1.0
            if value > 0 and value == value and value != float("inf"):
                rate = value
        return digest(key), ApiKey(str(namespace), str(name), rate)

    def set_secret(self, obj: Mapping[str, Any], deleted: bool = False) -> None:
        meta = obj.get("metadata") or {}
        ref = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        old = self.by_secret.pop(ref, None)
        if old is not None:
            self.keys.pop(old, None)
        if deleted:
            self.buckets.pop(ref, None)
            return
        parsed = self._parse(obj)
        if parsed is None:
            self.buckets.pop(ref, None)
            return
        dig, api_key = parsed
        self.keys[dig] = api_key
        self.by_secret[ref] = dig
        bucket = self.buckets.get(ref)
        if bucket is None or bucket.rate != api_key.requests_per_second:
            self.buckets[ref] = self._bucket(api_key.requests_per_second)

    def replace(self, objs: Iterable[Mapping[str, Any]]) -> None:
        self.keys.clear()
        self.by_secret.clear()
        for o in objs:
            self.set_secret(o)
        live = set(self.by_secret)
        for ref in list(self.buckets):
            if ref not in live:
                del self.buckets[ref]

    def _bucket(self, rate: float) -> TokenBucket:
        return TokenBucket(rate=rate, burst=max(2.0 * rate, 1.0), clock=self.clock)

    def lookup(self, key: str) -> ApiKey | None:
        return self.keys.get(digest(key)) if key else None

    def admit(self, api_key: ApiKey) -> float:
        """0.0 to admit a request of this key now, else seconds to wait (rate limited)."""
        ref = (api_key.namespace, api_key.secret)
        bucket = self.buckets.get(ref)
        if bucket is None:
            bucket = self.buckets[ref] = self._bucket(api_key.requests_per_second)
        return bucket.take()
