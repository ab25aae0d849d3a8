"""The node-side model cache: fetch from the store, verify, then rename into the repository.

``ModelCache.ensure(want, window)`` brings one variant to Ready, one step at a time:

1. already in the repository with this digest → Ready (its last use is touched);
2. no digest on the variant → Failed ``NoDigest`` (an unverifiable model is never served);
3. a car that may not download now (:func:`tokenfleet.delivery.rules.may_fetch`) → Waiting;
4. list ``<repositoryUri>/<model>/``; nothing there → Failed ``NotInStore``;
5. least-recently-used models not in use are evicted until it fits the disk budget, else Failed
   ``CacheBudgetExceeded``; a prefetch (``ensure(..., prefetch=True)``: asked by the operator
   through the job's ``status.prefetch``, no replica here yet) fills the cache only up to
   ``prefetch_percent`` of the budget, evicts neither models in use nor other prefetched ones,
   and otherwise waits (Waiting ``PrefetchBudget``, never Failed);
6. each file is fetched into ``<state>/staging/<model>@<digest16>/`` — resumed with a range GET
   from the partial file's size — re-checking ``window`` between chunks (a car that unplugs
   stops; the partial files stay for the next time);
7. the staging directory's digest (:mod:`.digest`) is compared with the variant's; a mismatch is
   Failed ``DigestMismatch`` and the staging copy is deleted;
8. when the variant names a signature (:mod:`.signature`), its ``model-signing`` bundle — the
   object ``<model>/<signature.path>``, listed with the files but fetched to
   ``<state>/staging/<model>@<digest16>.sig``, outside the model directory — is verified against
   the staging directory with the variant's public key or certificate chain: no bundle in the
   store is Failed ``SignatureMissing`` (before anything is fetched), a bundle that does not verify
   is Failed ``SignatureInvalid`` and the staging copy is deleted (not fetched again until the
   bundle in the store, the key or the digest changes);
9. only then is it renamed (one ``rename(2)``, same filesystem) to ``<repository>/<model>``.

The index records which key or chain (:attr:`.signature.Signature.fingerprint`) a model was
verified with: a variant that names a signature is held only if its model was verified with it.

The index of what is cached (digest, size, last use) is ``<state>/index.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from tokenfleet.delivery.digest import DigestError, tree_digest
from tokenfleet.delivery.lru import CachedModel, plan_evictions
from tokenfleet.delivery.report import DIGEST_PREFIX, CacheEntry, CacheReport, CacheState
from tokenfleet.delivery.rules import FetchVerdict, FetchWindow, may_fetch
from tokenfleet.delivery.signature import Signature, SignatureError, verify_signature
from tokenfleet.store import ObjectInfo, ObjectStore, StoreError, parse_s3_uri

__all__ = ["CacheMetrics", "ModelCache", "WantedModel"]

log = logging.getLogger("tokenfleet.modelcache")

INDEX_FILE: Final = "index.json"
MAX_BUNDLE_BYTES: Final = 16 << 20
"""A signature bundle larger than this is refused unread (its manifest lists one line a file)."""


@dataclass(frozen=True, slots=True)
class WantedModel:
    """A variant a replica on this node needs: Triton model name, store URI, digest, and the
    signature it names (if any)."""

    model: str
    repository_uri: str
    sha256: str | None
    signature: Signature | None = None


@dataclass
class CacheMetrics:
    """Counters the runner exports (plain ints: the runner owns the Prometheus objects)."""

    bytes_fetched: int = 0
    hits: int = 0
    misses: int = 0
    verification_failures: int = 0
    evictions: int = 0


@dataclass
class _Indexed:
    digest: str
    size: int
    last_used: float
    signer: str | None = None
    """Fingerprint of the key or chain its signature was verified with (none: not signed)."""


@dataclass
class ModelCache:
    """One node's cache. ``store_factory`` opens an :class:`ObjectStore` (``async with``)."""

    repository: Path
    state_dir: Path
    budget_bytes: int
    store_factory: Callable[[], ObjectStore]
    clock: Callable[[], float]
    prefetch_percent: float = 50.0
    """Share of the budget a prefetch may fill the cache to (percent)."""
    metrics: CacheMetrics = field(default_factory=CacheMetrics)
    entries: dict[str, CacheEntry] = field(default_factory=dict)
    index: dict[str, _Indexed] = field(default_factory=dict)
    in_use: set[str] = field(default_factory=set)
    prefetching: set[str] = field(default_factory=set)
    """Models the operator asked this node to prefetch: a prefetch never evicts one of them
    (two asks that do not fit together do not evict each other in turn)."""
    refused_bundles: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    """Model -> (digest, signer fingerprint, bundle ETag) of a SignatureInvalid refusal: not
    fetched again until one of them changes."""

    def __post_init__(self) -> None:
        self.repository = Path(self.repository)
        self.state_dir = Path(self.state_dir)
        self.repository.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "staging").mkdir(parents=True, exist_ok=True)
        self._load_index()

    # ---- index -----------------------------------------------------------------------------

    def _load_index(self) -> None:
        path = self.state_dir / INDEX_FILE
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            raw = {}
        for name, item in (raw.get("models") or {}).items() if isinstance(raw, dict) else ():
            try:
                entry = _Indexed(
                    str(item["digest"]),
                    int(item["size"]),
                    float(item["lastUsed"]),
                    str(item["signer"]) if item.get("signer") else None,
                )
            except (KeyError, TypeError, ValueError):
                continue
            if (self.repository / name).is_dir():
                self.index[name] = entry
                self.entries[name] = CacheEntry(
                    CacheState.READY, entry.digest[:DIGEST_PREFIX], entry.size, entry.size
                )

    def _save_index(self) -> None:
        doc = {
            "models": {
                n: {"digest": e.digest, "size": e.size, "lastUsed": e.last_used}
                | ({"signer": e.signer} if e.signer else {})
                for n, e in sorted(self.index.items())
            }
        }
        tmp = self.state_dir / (INDEX_FILE + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(self.state_dir / INDEX_FILE)

    def _install(self, name: str, staging: Path) -> None:
        """Rename the verified staging directory into the repository (one ``rename(2)``)."""
        target = self.repository / name
        if target.exists():
            # another build of the same model, not in use (the operator loads by name only
            # after this reports Ready for the new digest): out of the repository first
            self._evict(name)
        staging.rename(target)

    def used_bytes(self) -> int:
        return sum(e.size for e in self.index.values())

    def report(self) -> CacheReport:
        return CacheReport(self.budget_bytes, self.used_bytes(), dict(self.entries))

    def holds(self, model: str, sha256: str | None, signature: Signature | None = None) -> bool:
        """In the repository with this digest (and, when ``signature`` is given, verified with
        its key or chain)."""
        e = self.index.get(model)
        if e is None or sha256 is None or e.digest != sha256:
            return False
        return signature is None or e.signer == signature.fingerprint

    # ---- eviction --------------------------------------------------------------------------

    def _evict(self, name: str) -> None:
        self.index.pop(name, None)
        self.entries.pop(name, None)
        target = self.repository / name
        if target.exists():
            trash = self.state_dir / "trash" / f"{name}.{int(self.clock() * 1000)}"
            trash.parent.mkdir(parents=True, exist_ok=True)
            target.rename(trash)  # out of the repository at once, then deleted
            shutil.rmtree(trash, ignore_errors=True)
        self.metrics.evictions += 1
        self._save_index()
        log.info("evicted %s (least recently used)", name)

    def observe_wanted(
        self, wants: list[WantedModel], prefetch: list[WantedModel] | None = None
    ) -> None:
        """The models replicas on this node want now: they are in use (never evicted); one
        newly wanted counts as a cache hit when it is already held, else a miss. Entries of
        models nobody wants (nor asks to prefetch) any more are dropped, except Ready ones
        (kept until evicted)."""
        names = {w.model for w in wants}
        self.prefetching = {w.model for w in prefetch or ()}
        keep = names | self.prefetching
        for w in wants:
            if w.model not in self.in_use:
                if self.holds(w.model, w.sha256, w.signature):
                    self.metrics.hits += 1
                else:
                    self.metrics.misses += 1
        self.in_use = names
        for name in list(self.entries):
            if name not in keep and self.entries[name].state is not CacheState.READY:
                del self.entries[name]

    # ---- the work --------------------------------------------------------------------------

    def _set(self, name: str, entry: CacheEntry) -> None:
        self.entries[name] = entry

    async def ensure(
        self,
        want: WantedModel,
        window: Callable[[], FetchWindow | None],
        *,
        prefetch: bool = False,
    ) -> CacheEntry:
        """One pass toward Ready for ``want`` (see the module docstring). Never raises for the
        store or the model's content: the outcome is the returned (and reported) entry.
        ``window`` is read again between chunks, so a car that unplugs stops downloading."""
        name, sha = want.model, want.sha256
        short = (sha or "none")[:DIGEST_PREFIX]
        if self.holds(name, sha, want.signature):
            self.index[name].last_used = self.clock()
            entry = self.entries.get(name)
            if entry is None or entry.state is not CacheState.READY:
                size = self.index[name].size
                self._set(name, CacheEntry(CacheState.READY, short, size, size))
            return self.entries[name]
        if sha is None:
            entry = CacheEntry(
                CacheState.FAILED,
                short,
                reason="NoDigest",
                message="the variant names no sha256: the model cache serves verified models only",
            )
            self._set(name, entry)
            return entry
        current = self.entries.get(name)
        if (
            current is not None
            and current.state is CacheState.FAILED
            and current.reason == "DigestMismatch"
            and current.matches(sha)
        ):
            return current  # refused: not fetched again while this digest is wanted here
        try:
            bucket, prefix = parse_s3_uri(want.repository_uri)
        except ValueError as error:
            entry = CacheEntry(
                CacheState.FAILED, short, reason="BadRepositoryUri", message=str(error)
            )
            self._set(name, entry)
            return entry
        key_prefix = f"{prefix}/{name}/" if prefix else f"{name}/"
        staging = self.state_dir / "staging" / f"{name}@{short}"
        bundle: tuple[ObjectInfo, Path] | None = None
        try:
            async with self.store_factory() as store:
                listed = await store.list(bucket, key_prefix)
                if not listed:
                    entry = CacheEntry(
                        CacheState.FAILED,
                        short,
                        reason="NotInStore",
                        message=f"nothing under s3://{bucket}/{key_prefix}",
                    )
                    self._set(name, entry)
                    return entry
                objects, bundle_info = _split_bundle(listed, key_prefix, want.signature)
                total = sum(o.size for o in objects)
                if want.signature is not None:
                    refused = self._bundle_refusal(want, bucket, key_prefix, short, bundle_info)
                    if refused is not None:
                        return refused
                    assert bundle_info is not None
                    bundle = (bundle_info, staging.with_name(staging.name + ".sig"))
                have = _staged_bytes(staging, objects, key_prefix)
                verdict = may_fetch(window(), total - have, self.clock())
                if not verdict.ok:
                    return self._waiting(name, short, have, total, verdict)
                refused = self._make_room(name, short, have, total, prefetch=prefetch)
                if refused is not None:
                    return refused
                stopped = await self._fetch(
                    store, bucket, key_prefix, objects, staging, name, short, total, window
                )
                if stopped is not None:
                    have = _staged_bytes(staging, objects, key_prefix)
                    return self._waiting(name, short, have, total, stopped)
                if bundle is not None:
                    await self._fetch_bundle(store, bucket, *bundle)
        except StoreError as error:
            entry = CacheEntry(
                CacheState.WAITING, short, reason="StoreUnavailable", message=str(error)[:300]
            )
            self._set(name, entry)
            log.warning("fetching %s: %s", name, error)
            return entry
        return await self._verify_and_install(want, short, staging, total, bundle)

    def _bundle_refusal(
        self,
        want: WantedModel,
        bucket: str,
        key_prefix: str,
        short: str,
        bundle: ObjectInfo | None,
    ) -> CacheEntry | None:
        """The refusal of a signed variant before anything is fetched: its bundle is not in the
        store (SignatureMissing), too large, or is the one already refused for this digest and
        key (SignatureInvalid stays); else ``None``."""
        name, sig = want.model, want.signature
        assert sig is not None and want.sha256 is not None
        current = self.entries.get(name)
        if bundle is None or bundle.size > MAX_BUNDLE_BYTES:
            reason = "SignatureMissing" if bundle is None else "SignatureInvalid"
            message = (
                f"the variant names a signature and s3://{bucket}/{key_prefix}{sig.path} "
                f"is not in the store"
                if bundle is None
                else f"the signature bundle is {bundle.size} B (at most {MAX_BUNDLE_BYTES} B)"
            )
            again = current is not None and current.reason == reason
            if not (again and current is not None and current.matches(want.sha256)):
                self.metrics.verification_failures += 1  # counted once, not every pass
                log.warning("refused %s: %s", name, message)
            entry = CacheEntry(CacheState.FAILED, short, reason=reason, message=message)
            self._set(name, entry)
            return entry
        if (
            current is not None
            and current.state is CacheState.FAILED
            and current.reason == "SignatureInvalid"
            and current.matches(want.sha256)
            and self.refused_bundles.get(name) == (want.sha256, sig.fingerprint, bundle.etag)
        ):
            return current  # the same bundle, key and digest: not fetched again
        return None

    def _make_room(
        self, name: str, short: str, have: int, total: int, *, prefetch: bool
    ) -> CacheEntry | None:
        """Evict what must go for ``total`` bytes of ``name``; the refusal (or a prefetch's
        wait) when it cannot fit, else ``None``."""
        # a prefetch fills the cache only up to its share of the budget
        limit = self.budget_bytes
        if prefetch:
            limit = int(self.budget_bytes * self.prefetch_percent / 100)
        kept = self.in_use | self.prefetching if prefetch else self.in_use
        plan = plan_evictions(
            (
                CachedModel(n, e.size, e.last_used, n in kept)
                for n, e in self.index.items()
                if n != name
            ),
            total,
            limit,
        )
        if not plan.fits and prefetch:
            entry = CacheEntry(
                CacheState.WAITING,
                short,
                have,
                total,
                reason="PrefetchBudget",
                message=f"{total} B does not fit the prefetch share "
                f"({self.prefetch_percent:g} %) of the {self.budget_bytes} B budget",
            )
            self._set(name, entry)
            return entry
        if not plan.fits:
            entry = CacheEntry(
                CacheState.FAILED,
                short,
                0,
                total,
                reason="CacheBudgetExceeded",
                message=f"{total} B does not fit the {self.budget_bytes} B budget next "
                f"to the models in use",
            )
            self._set(name, entry)
            return entry
        for victim in plan.evict:
            self._evict(victim)
        return None

    async def _fetch_bundle(
        self, store: ObjectStore, bucket: str, info: ObjectInfo, path: Path
    ) -> None:
        """The signature bundle, whole (a few KB), to ``path`` outside the staging directory."""
        data = await store.get(bucket, info.key)
        self.metrics.bytes_fetched += len(data)
        await asyncio.to_thread(path.write_bytes, data)

    def _waiting(
        self, name: str, short: str, have: int, total: int, verdict: FetchVerdict
    ) -> CacheEntry:
        entry = CacheEntry(
            CacheState.WAITING,
            short,
            have,
            total,
            reason=verdict.reason.value if verdict.reason else "Waiting",
            message=verdict.message,
        )
        self._set(name, entry)
        return entry

    async def _fetch(
        self,
        store: ObjectStore,
        bucket: str,
        key_prefix: str,
        objects: list[ObjectInfo],
        staging: Path,
        name: str,
        short: str,
        total: int,
        window: Callable[[], FetchWindow | None],
    ) -> FetchVerdict | None:
        """Fetch every object into ``staging`` (resuming partial files). Returns a negative
        verdict when the window closed mid-way, else ``None``."""
        done = _staged_bytes(staging, objects, key_prefix)
        self._set(name, CacheEntry(CacheState.FETCHING, short, done, total))
        for obj in objects:
            rel = obj.key[len(key_prefix) :]
            if not rel or rel.endswith("/") or ".." in Path(rel).parts or rel.startswith("/"):
                continue
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            have = path.stat().st_size if path.exists() else 0
            if have > obj.size:
                path.unlink()
                done -= have
                have = 0
            if have == obj.size:
                continue
            with path.open("ab") as f:
                async for chunk in store.stream(bucket, obj.key, start=have):
                    f.write(chunk)
                    done += len(chunk)
                    self.metrics.bytes_fetched += len(chunk)
                    self._set(name, CacheEntry(CacheState.FETCHING, short, done, total))
                    verdict = may_fetch(window(), total - done, self.clock())
                    if not verdict.ok:
                        f.flush()
                        return verdict
                    await asyncio.sleep(0)
        return None

    async def _verify_and_install(
        self,
        want: WantedModel,
        short: str,
        staging: Path,
        total: int,
        bundle: tuple[ObjectInfo, Path] | None,
    ) -> CacheEntry:
        name, sha = want.model, want.sha256
        assert sha is not None
        self._set(name, CacheEntry(CacheState.VERIFYING, short, total, total))
        try:
            digest = await asyncio.to_thread(tree_digest, staging)
        except (DigestError, OSError) as error:
            digest, problem = None, str(error)
        else:
            problem = ""
        if digest != sha:
            message = (
                f"digest of the fetched files is {digest}, the variant says {sha}"
                if digest is not None
                else f"cannot digest the fetched files: {problem}"
            )
            return self._refuse(name, short, total, staging, bundle, "DigestMismatch", message)
        signer: str | None = None
        if bundle is not None:
            info, path = bundle
            assert want.signature is not None
            try:
                await asyncio.to_thread(verify_signature, staging, path, want.signature)
            except SignatureError as error:
                self.refused_bundles[name] = (sha, want.signature.fingerprint, info.etag)
                trust = "public key" if want.signature.trust == "key" else "certificate chain"
                message = (
                    f"signature {want.signature.path} does not verify with the variant's "
                    f"{trust}: {error}"
                )
                return self._refuse(
                    name, short, total, staging, bundle, "SignatureInvalid", message
                )
            path.unlink(missing_ok=True)
            self.refused_bundles.pop(name, None)
            signer = want.signature.fingerprint
        self._install(name, staging)
        self.index[name] = _Indexed(sha, total, self.clock(), signer)
        self._save_index()
        entry = CacheEntry(CacheState.READY, short, total, total)
        self._set(name, entry)
        signed = (
            f", signature verified by {want.signature.trust}" if signer and want.signature else ""
        )
        log.info("%s verified (%s%s) and installed, %d B", name, sha[:12], signed, total)
        return entry

    def _refuse(
        self,
        name: str,
        short: str,
        total: int,
        staging: Path,
        bundle: tuple[ObjectInfo, Path] | None,
        reason: str,
        message: str,
    ) -> CacheEntry:
        """Failed ``reason``: the staging copy (and the bundle) deleted, never installed."""
        shutil.rmtree(staging, ignore_errors=True)
        if bundle is not None:
            bundle[1].unlink(missing_ok=True)
        self.metrics.verification_failures += 1
        entry = CacheEntry(CacheState.FAILED, short, 0, total, reason=reason, message=message)
        self._set(name, entry)
        log.warning("refused %s: %s", name, message)
        return entry


def _split_bundle(
    objects: list[ObjectInfo], key_prefix: str, signature: Signature | None
) -> tuple[list[ObjectInfo], ObjectInfo | None]:
    """The model's files and, when the variant names a signature, its bundle (``None`` when it
    is not in the store): the bundle is not one of the model's files."""
    if signature is None:
        return objects, None
    key = key_prefix + signature.path
    files = [o for o in objects if o.key != key]
    bundle = next((o for o in objects if o.key == key), None)
    return files, bundle


def _staged_bytes(staging: Path, objects: list[ObjectInfo], key_prefix: str) -> int:
    total = 0
    for obj in objects:
        path = staging / obj.key[len(key_prefix) :]
        with contextlib.suppress(OSError):
            total += min(path.stat().st_size, obj.size)
    return total
