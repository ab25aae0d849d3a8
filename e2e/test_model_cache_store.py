"""The node cache against the real object store, without the control plane: resumable range
downloads, verification before installation, the LRU disk budget, the car's download window."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from e2e.delivery_kit import get_object, put_objects, upload_variant
from e2e.objstore import ObjectStoreServer
from e2e.signing_kit import SigningKey, sign_with_key
from tokenfleet.delivery.cache import ModelCache, WantedModel
from tokenfleet.delivery.digest import tree_digest
from tokenfleet.delivery.report import CacheState
from tokenfleet.delivery.rules import FetchWindow
from tokenfleet.delivery.signature import Signature
from tokenfleet.store import ObjectStore

MB = 1 << 20


def _cache(store: ObjectStoreServer, tmp: Path, budget: int) -> ModelCache:
    return ModelCache(
        repository=tmp / "repo",
        state_dir=tmp / "state",
        budget_bytes=budget,
        store_factory=lambda: ObjectStore(store.store_config()),
        clock=time.time,
    )


def _rack() -> FetchWindow | None:
    return None


async def test_fetch_verify_install_then_hit(objstore: ObjectStoreServer, tmp_path: Path) -> None:
    bucket = f"c-{uuid.uuid4().hex[:6]}"
    sha = upload_variant(objstore, bucket, "m", "a-int4", ballast_bytes=2 * MB)
    cache = _cache(objstore, tmp_path, 64 * MB)
    want = WantedModel("a-int4", f"s3://{bucket}/m", sha)
    cache.observe_wanted([want])
    entry = await cache.ensure(want, _rack)
    assert entry.state is CacheState.READY and entry.matches(sha)
    assert (tmp_path / "repo" / "a-int4" / "1" / "weights.bin").stat().st_size == 2 * MB
    fetched = cache.metrics.bytes_fetched
    assert fetched >= 2 * MB and cache.metrics.misses == 1
    # wanted again later (another replica): a hit, nothing moves
    cache.observe_wanted([])
    cache.observe_wanted([want])
    assert (await cache.ensure(want, _rack)).state is CacheState.READY
    assert cache.metrics.bytes_fetched == fetched and cache.metrics.hits == 1
    # a restart keeps what is cached (index on disk)
    again = _cache(objstore, tmp_path, 64 * MB)
    assert again.holds("a-int4", sha) and again.used_bytes() == cache.used_bytes()


async def test_a_download_paused_by_the_window_resumes_with_a_range_get(
    objstore: ObjectStoreServer, tmp_path: Path
) -> None:
    bucket = f"c-{uuid.uuid4().hex[:6]}"
    sha = upload_variant(objstore, bucket, "m", "b-int4", ballast_bytes=5 * MB)
    cache = _cache(objstore, tmp_path, 64 * MB)
    want = WantedModel("b-int4", f"s3://{bucket}/m", sha)
    departure = time.time() + 4 * 3600
    plugged = {"in": True}

    def window() -> FetchWindow:
        return FetchWindow(plugged["in"], 500.0, departure, 900.0, 100.0)

    # unplug after the first 1 MiB chunk of the weights file
    original = cache._set

    def spy(name: str, entry: object) -> None:
        original(name, entry)  # type: ignore[arg-type]
        if getattr(entry, "bytes", 0) >= 2 * MB:
            plugged["in"] = False

    cache._set = spy  # type: ignore[method-assign]
    cache.observe_wanted([want])
    paused = await cache.ensure(want, window)
    assert paused.state is CacheState.WAITING and paused.reason == "FetchNotPluggedIn"
    partial = paused.bytes
    assert 0 < partial < paused.total  # type: ignore[operator]
    assert not (tmp_path / "repo" / "b-int4").exists()
    # plugged again: only the missing bytes move (range GET from the partial file's size)
    plugged["in"] = True
    cache._set = original  # type: ignore[method-assign]
    before = cache.metrics.bytes_fetched
    done = await cache.ensure(want, window)
    assert done.state is CacheState.READY, done
    assert cache.metrics.bytes_fetched - before == done.total - partial  # type: ignore[operator]


async def test_tampered_files_are_refused_and_never_installed(
    objstore: ObjectStoreServer, tmp_path: Path
) -> None:
    bucket = f"c-{uuid.uuid4().hex[:6]}"
    sha = upload_variant(objstore, bucket, "m", "c-int4")
    put_objects(objstore, bucket, {"m/c-int4/1/extra.py": b"import os\n"})
    cache = _cache(objstore, tmp_path, 64 * MB)
    want = WantedModel("c-int4", f"s3://{bucket}/m", sha)
    cache.observe_wanted([want])
    entry = await cache.ensure(want, _rack)
    assert entry.state is CacheState.FAILED and entry.reason == "DigestMismatch"
    assert not (tmp_path / "repo" / "c-int4").exists()
    assert not any((tmp_path / "state" / "staging").iterdir())  # staging copy deleted
    assert cache.metrics.verification_failures == 1
    # a variant without a digest is never fetched at all
    nodigest = WantedModel("c-int4", f"s3://{bucket}/m", None)
    assert (await cache.ensure(nodigest, _rack)).reason == "NoDigest"


async def test_the_disk_budget_is_kept_by_evicting_least_recently_used(
    objstore: ObjectStoreServer, tmp_path: Path
) -> None:
    bucket = f"c-{uuid.uuid4().hex[:6]}"
    wants = [
        WantedModel(
            f"m{i}-int4",
            f"s3://{bucket}/m",
            upload_variant(objstore, bucket, "m", f"m{i}-int4", ballast_bytes=3 * MB),
        )
        for i in range(4)
    ]
    size = 3 * MB + 20_000  # weights + config + model.py, roughly
    cache = _cache(objstore, tmp_path, 2 * size + MB)  # room for two
    for want in wants[:2]:
        cache.observe_wanted([want])
        assert (await cache.ensure(want, _rack)).state is CacheState.READY
    cache.observe_wanted([wants[0]])  # m0 used again: m1 is now least recently used
    await cache.ensure(wants[0], _rack)
    cache.observe_wanted([wants[0], wants[2]])
    assert (await cache.ensure(wants[2], _rack)).state is CacheState.READY
    repo = tmp_path / "repo"
    assert sorted(p.name for p in repo.iterdir()) == ["m0-int4", "m2-int4"]
    assert cache.used_bytes() <= cache.budget_bytes
    # both held models in use: a third does not fit and nothing in use is evicted
    cache.observe_wanted([wants[0], wants[2], wants[3]])
    full = await cache.ensure(wants[3], _rack)
    assert full.state is CacheState.FAILED and full.reason == "CacheBudgetExceeded"
    assert sorted(p.name for p in repo.iterdir()) == ["m0-int4", "m2-int4"]
    assert cache.metrics.evictions == 1


async def test_a_prefetch_stays_within_its_share_and_never_evicts_what_is_in_use(
    objstore: ObjectStoreServer, tmp_path: Path
) -> None:
    bucket = f"c-{uuid.uuid4().hex[:6]}"
    uri = f"s3://{bucket}/m"
    used = WantedModel("used-int4", uri, upload_variant(objstore, bucket, "m", "used-int4",
                                                        ballast_bytes=3 * MB))  # fmt: skip
    ahead = WantedModel("ahead-int4", uri, upload_variant(objstore, bucket, "m", "ahead-int4",
                                                          ballast_bytes=3 * MB))  # fmt: skip
    big = WantedModel("big-int4", uri, upload_variant(objstore, bucket, "m", "big-int4",
                                                      ballast_bytes=6 * MB))  # fmt: skip
    cache = _cache(objstore, tmp_path, 10 * MB)
    cache.prefetch_percent = 80.0  # prefetches fill the cache up to 8 MiB
    cache.observe_wanted([used], [ahead, big])
    assert (await cache.ensure(used, _rack)).state is CacheState.READY
    misses = cache.metrics.misses
    # the prefetch fits next to the model in use (3 + 3 MiB <= 8 MiB): fetched, verified, Ready
    entry = await cache.ensure(ahead, _rack, prefetch=True)
    assert entry.state is CacheState.READY and cache.holds("ahead-int4", ahead.sha256)
    assert cache.metrics.misses == misses  # a prefetch is neither a hit nor a miss
    # the big one would need evicting the model in use or the other prefetch: it waits, unfetched
    fetched = cache.metrics.bytes_fetched
    waiting = await cache.ensure(big, _rack, prefetch=True)
    assert waiting.state is CacheState.WAITING and waiting.reason == "PrefetchBudget"
    assert cache.metrics.bytes_fetched == fetched
    assert cache.holds("used-int4", used.sha256) and cache.holds("ahead-int4", ahead.sha256)
    # a replica placed here later finds the prefetched model: a hit, 0 bytes moved
    cache.observe_wanted([used, ahead], [big])
    assert (await cache.ensure(ahead, _rack)).state is CacheState.READY
    assert cache.metrics.hits == 1 and cache.metrics.bytes_fetched == fetched
    # placed for real next to two models in use, it does not fit the whole budget either
    cache.observe_wanted([used, ahead, big])
    refused = await cache.ensure(big, _rack)
    assert refused.state is CacheState.FAILED and refused.reason == "CacheBudgetExceeded"


# ---- signed variants (OpenSSF model-signing, real keys) ------------------------------------


def _signed(store: ObjectStoreServer, bucket: str, model: str, key: SigningKey, **kw: Any) -> str:
    return upload_variant(
        store, bucket, "m", model, sign=lambda d, b: sign_with_key(d, b, key), **kw
    )


async def test_a_signed_variant_is_verified_and_installed_without_its_bundle(
    objstore: ObjectStoreServer, tmp_path: Path
) -> None:
    bucket = f"s-{uuid.uuid4().hex[:6]}"
    key = SigningKey.generate(tmp_path / "keys")
    sha = _signed(objstore, bucket, "s-int4", key)
    trust = Signature(public_key=key.public_pem)
    cache = _cache(objstore, tmp_path, 64 * MB)
    want = WantedModel("s-int4", f"s3://{bucket}/m", sha, trust)
    cache.observe_wanted([want])
    entry = await cache.ensure(want, _rack)
    assert entry.state is CacheState.READY and entry.matches(sha), entry
    installed = tmp_path / "repo" / "s-int4"
    assert (installed / "1" / "model.py").is_file()
    assert not (installed / "model.sig").exists()  # the bundle is not part of the model
    assert not any((tmp_path / "state" / "staging").iterdir())
    assert cache.holds("s-int4", sha, trust) and cache.metrics.verification_failures == 0
    # a restart keeps what it was verified with (index on disk); another key is not satisfied
    again = _cache(objstore, tmp_path, 64 * MB)
    assert again.holds("s-int4", sha, trust)
    other = Signature(public_key=SigningKey.generate(tmp_path / "k2").public_pem)
    assert not again.holds("s-int4", sha, other)


async def test_a_signature_by_another_key_is_refused_until_a_good_bundle_is_uploaded(
    objstore: ObjectStoreServer, tmp_path: Path
) -> None:
    bucket = f"s-{uuid.uuid4().hex[:6]}"
    ours, theirs = SigningKey.generate(tmp_path / "a", "ours"), SigningKey.generate(tmp_path / "b")
    sha = _signed(objstore, bucket, "w-int4", theirs)
    cache = _cache(objstore, tmp_path, 64 * MB)
    want = WantedModel("w-int4", f"s3://{bucket}/m", sha, Signature(public_key=ours.public_pem))
    cache.observe_wanted([want])
    entry = await cache.ensure(want, _rack)
    assert entry.state is CacheState.FAILED and entry.reason == "SignatureInvalid", entry
    assert (
        entry.message is not None
        and "model.sig does not verify with the variant's public key" in entry.message
    )
    assert not (tmp_path / "repo" / "w-int4").exists()
    assert not any((tmp_path / "state" / "staging").iterdir())  # staging and bundle deleted
    assert cache.metrics.verification_failures == 1
    # the same bundle, key and digest: refused again without fetching anything
    fetched = cache.metrics.bytes_fetched
    assert (await cache.ensure(want, _rack)).reason == "SignatureInvalid"
    assert cache.metrics.bytes_fetched == fetched and cache.metrics.verification_failures == 1
    # the publisher uploads a bundle signed with our key: verified and installed
    _signed(objstore, bucket, "w-int4", ours)
    done = await cache.ensure(want, _rack)
    assert done.state is CacheState.READY, done


async def test_a_variant_whose_bundle_is_missing_is_refused_before_any_download(
    objstore: ObjectStoreServer, tmp_path: Path
) -> None:
    bucket = f"s-{uuid.uuid4().hex[:6]}"
    key = SigningKey.generate(tmp_path / "keys")
    sha = upload_variant(objstore, bucket, "m", "n-int4")  # no bundle uploaded
    cache = _cache(objstore, tmp_path, 64 * MB)
    trust = Signature("sigs/n.sig", public_key=key.public_pem)
    want = WantedModel("n-int4", f"s3://{bucket}/m", sha, trust)
    cache.observe_wanted([want])
    entry = await cache.ensure(want, _rack)
    assert entry.state is CacheState.FAILED and entry.reason == "SignatureMissing", entry
    assert entry.message is not None and f"s3://{bucket}/m/n-int4/sigs/n.sig" in entry.message
    assert cache.metrics.bytes_fetched == 0 and cache.metrics.verification_failures == 1
    assert (await cache.ensure(want, _rack)).reason == "SignatureMissing"
    assert cache.metrics.verification_failures == 1  # counted once while it stays refused
    assert not (tmp_path / "repo" / "n-int4").exists()
    # once the bundle is there, the next pass verifies and installs
    _signed(objstore, bucket, "n-int4", key, signature_path="sigs/n.sig")
    assert (await cache.ensure(want, _rack)).state is CacheState.READY


async def test_a_tampered_file_whose_digest_was_retaken_fails_the_signature(
    objstore: ObjectStoreServer, tmp_path: Path
) -> None:
    """Someone changes a file in the store and puts the new digest in the job: sha256 matches,
    the publisher's signature does not."""
    bucket = f"s-{uuid.uuid4().hex[:6]}"
    key = SigningKey.generate(tmp_path / "keys")
    _signed(objstore, bucket, "t-int4", key)
    path = "m/t-int4/1/model.py"
    tampered = get_object(objstore, bucket, path).replace(b"import", b"import ", 1)
    put_objects(objstore, bucket, {path: tampered})
    local = tmp_path / "copy"
    for rel in ("config.pbtxt", "1/model.py"):
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).write_bytes(get_object(objstore, bucket, f"m/t-int4/{rel}"))
    retaken = tree_digest(local)
    cache = _cache(objstore, tmp_path, 64 * MB)
    want = WantedModel("t-int4", f"s3://{bucket}/m", retaken, Signature(public_key=key.public_pem))
    cache.observe_wanted([want])
    entry = await cache.ensure(want, _rack)
    assert entry.state is CacheState.FAILED and entry.reason == "SignatureInvalid", entry
    assert entry.message is not None and "changed: 1/model.py" in entry.message
    assert not (tmp_path / "repo" / "t-int4").exists()
