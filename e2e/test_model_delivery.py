"""Model delivery end to end: real control plane, real tritonservers (each with an empty model
repository), the real object store (SeaweedFS) and ``tokenfleet modelcache`` next to every
runtime. A model reaches a runtime only through the store and the cache's verification."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from e2e.delivery_kit import (
    CachedRuntimes,
    create_store_secret,
    get_object,
    model_caches,
    put_objects,
    settle,
    upload_variant,
)
from e2e.objstore import ObjectStoreServer
from e2e.operator_kit import (  # noqa: F401  (fixtures)
    RACK_FP16,
    VEHICLE_INT4,
    OperatorProcess,
    Rig,
    operator_fixture,
    rfc3339,
    rig_fixture,
    wait_for,
)
from e2e.signing_kit import SigningKey, sign_with_key
from tokenfleet.delivery.report import CacheState


def _job(rig: Rig, name: str, variants: list[dict[str, Any]], uri: str, **kw: Any) -> None:
    body = rig.job_body(name, variants, **kw)
    body["spec"]["model"]["repositoryUri"] = uri
    rig.custom.create_namespaced_custom_object(
        "tokenfleet.io", "v1alpha1", rig.namespace, "inferencejobs", body
    )


def _placement(rig: Rig, job: str, node: str) -> dict[str, Any] | None:
    for p in rig.status(job).get("placements") or ():
        if p["node"] == node:
            return dict(p)
    return None


def test_store_only_job_reaches_ready_and_a_tampered_model_is_refused(
    rig: Rig, operator: OperatorProcess, objstore: ObjectStoreServer
) -> None:
    bucket = f"models-{uuid.uuid4().hex[:6]}"
    fp16 = upload_variant(objstore, bucket, "tinyllama", "tinyllama-fp16")
    int4 = upload_variant(objstore, bucket, "tinyllama", "tinyllama-int4")
    secret = create_store_secret(rig, objstore)
    runtimes = CachedRuntimes(rig.tmp, 3).start()
    rig.tritons = runtimes  # type: ignore[assignment]  # rig.endpoint(i) reads it
    rig.start_sim(["unused"])
    tank, pool = rig.create_tank("tank"), rig.create_pool("pool")
    rack = rig.add_rack("rack", 0, tank)
    car = rig.add_vehicle("car", 1, pool)
    rig.wait_runtime_pods()
    with model_caches(rig, runtimes, {rack: 0, car: 1}, store_secret=secret) as caches:
        uri = f"s3://{bucket}/tinyllama"
        _job(
            rig,
            "chat",
            [{**RACK_FP16, "sha256": fp16}, {**VEHICLE_INT4, "sha256": int4}],
            uri,
            replicas=(2, 2),
            target_tps=60,
        )
        status = rig.wait_ready("chat", 2, timeout=150)
        placed = {p["node"]: p["variant"] for p in status["placements"]}
        assert placed == {rack: "fp16", car: "int4"}
        # fetched, verified and installed into each runtime's own repository, then loaded
        assert (runtimes.repos[0] / "tinyllama-fp16" / "1" / "model.py").is_file()
        assert (runtimes.repos[1] / "tinyllama-int4" / "config.pbtxt").is_file()
        assert rig.loaded_models(rack) == {"tinyllama-fp16"}
        assert rig.loaded_models(car) == {"tinyllama-int4"}
        assert len(rig.generate(car, "tinyllama-int4", "hello there", 4)) == 4
        report = caches[car].report()
        assert report is not None and report.holds("tinyllama-int4", int4)
        assert caches[car].metric("tokenfleet_modelcache_fetched_bytes_total") > 0
        assert caches[car].metric("tokenfleet_modelcache_misses_total") == 1

        # A tampered build: the digest was taken, then a file in the store changed by a byte.
        evil = upload_variant(objstore, bucket, "evil", "evil-int4")
        key = "evil/evil-int4/1/model.py"
        body = get_object(objstore, bucket, key)
        put_objects(objstore, bucket, {key: body.replace(b"import", b"import ", 1)})
        _job(
            rig,
            "evil",
            [{**VEHICLE_INT4, "sha256": evil}],
            f"s3://{bucket}/evil",
            replicas=(1, 1),
            target_tps=20,
            model="evil",
        )

        # the cache reports the refusal until the replica is Failed (then nobody wants the
        # model and the cache drops the entry): read both in one loop
        reported: list[Any] = []

        def refused() -> dict[str, Any] | None:
            report = caches[car].report()
            entry = report.models.get("evil-int4") if report is not None else None
            if entry is not None and entry.state is CacheState.FAILED:
                reported.append(entry)
            p = _placement(rig, "evil", car)
            return p if p and p["state"] == "Failed" and reported else None

        failed = wait_for(
            refused, 90, "the tampered replica to fail", describe=lambda: rig.status("evil")
        )
        assert failed["reason"] == "VerificationFailed", failed
        assert "DigestMismatch" in failed["message"] and evil in failed["message"], failed
        assert {e.reason for e in reported} == {"DigestMismatch"}, reported
        # never installed, never loaded; the good model on the same runtime is untouched
        assert not (runtimes.repos[1] / "evil-int4").exists()
        assert "evil-int4" not in rig.loaded_models(car)
        assert rig.loaded_models(car) == {"tinyllama-int4"}
        assert caches[car].metric("tokenfleet_modelcache_verification_failures_total") == 1
        reasons = {e.get("reason") for e in rig.events("evil")}
        assert "VerificationFailed" in reasons, reasons

        # the job says why (its conditions quote the cache's refusal)
        def says_why() -> list[dict[str, Any]] | None:
            conditions = rig.status("evil").get("conditions") or []
            ready = next((c for c in conditions if c["type"] == "Ready"), None)
            quoted = any("DigestMismatch" in c.get("message", "") for c in conditions)
            return conditions if ready and ready["status"] == "False" and quoted else None

        wait_for(says_why, 60, "the job to say why", describe=lambda: rig.status("evil"))
        assert (
            operator.metric("tokenfleet_model_delivery_refused_total", reason="VerificationFailed")
            >= 1
        )


def test_a_car_on_low_bandwidth_or_about_to_depart_is_not_sent_a_download(
    rig: Rig, operator: OperatorProcess, objstore: ObjectStoreServer
) -> None:
    bucket = f"models-{uuid.uuid4().hex[:6]}"
    int4 = upload_variant(objstore, bucket, "tinyllama", "tinyllama-int4")
    secret = create_store_secret(rig, objstore)
    runtimes = CachedRuntimes(rig.tmp, 2).start()
    rig.tritons = runtimes  # type: ignore[assignment]
    # the pool downloads at >= 100 Mbit/s; the variant's 6000 MiB estimate needs
    # 6000 MiB x 8 / 200 Mbit/s x 1.5 = 377 s on the fast car's link
    pool = rig.create_pool(
        "pool", delivery={"minBandwidthMbps": 100, "fetchTimeMarginPercent": 150}
    )
    slow = rig.add_vehicle("slow", 0, pool, telemetry={"bandwidth-mbps": "40"})
    soon = datetime.now(UTC) + timedelta(seconds=900 + 200)  # drain lead 900 s + 200 s < 377 s
    leaving = rig.add_vehicle(
        "leaving",
        1,
        pool,
        telemetry={"bandwidth-mbps": "200", "departure-time": rfc3339(soon)},
    )
    rig.wait_runtime_pods()
    with model_caches(rig, runtimes, {slow: 0, leaving: 1}, store_secret=secret) as caches:
        _job(
            rig,
            "car-job",
            [{**VEHICLE_INT4, "sha256": int4}],
            f"s3://{bucket}/tinyllama",
            replicas=(1, 1),
            target_tps=20,
            targets=["Vehicle"],
        )
        wait_for(
            lambda: rig.status("car-job").get("conditions") is not None,
            60,
            "the job's first status",
        )
        settle(8)
        assert not rig.status("car-job").get("placements"), rig.status("car-job")
        for cache in caches.values():
            assert cache.metric("tokenfleet_modelcache_fetched_bytes_total") == 0
            report = cache.report()
            assert report is not None and report.models == {}
        assert "ModelNotDeliverable" in str(rig.status("car-job").get("shortfallReason")), (
            rig.status("car-job")
        )

        # the slow car's link improves: it is sent the download and serves
        rig.set_telemetry(slow, bandwidth_mbps="400")
        status = rig.wait_ready("car-job", 1, timeout=120)
        assert [p["node"] for p in status["placements"]] == [slow]
        assert caches[slow].metric("tokenfleet_modelcache_fetched_bytes_total") > 0
        assert caches[leaving].metric("tokenfleet_modelcache_fetched_bytes_total") == 0


def test_a_car_that_holds_the_model_is_preferred_and_its_move_is_load_only(
    rig: Rig, operator: OperatorProcess, objstore: ObjectStoreServer
) -> None:
    bucket = f"models-{uuid.uuid4().hex[:6]}"
    int4 = upload_variant(objstore, bucket, "tinyllama", "tinyllama-int4")
    secret = create_store_secret(rig, objstore)
    runtimes = CachedRuntimes(rig.tmp, 2).start()
    rig.tritons = runtimes  # type: ignore[assignment]
    # prefetch off: this test isolates the warm preference (the tight car would be asked to
    # prefetch once its link is fast; see the prefetch test below)
    pool = rig.create_pool("pool", delivery={"minBandwidthMbps": 100, "prefetchPerJob": 0})
    # placement's tie-break prefers the tighter fit (32 Gi); the warm car has 64 Gi
    warm = rig.add_vehicle("warm", 0, pool, memory="64Gi")
    tight = rig.add_vehicle("tight", 1, pool, memory="32Gi", telemetry={"bandwidth-mbps": "20"})
    rig.wait_runtime_pods()
    variant = {**VEHICLE_INT4, "sha256": int4}
    uri = f"s3://{bucket}/tinyllama"
    with model_caches(rig, runtimes, {warm: 0, tight: 1}, store_secret=secret) as caches:
        # first job: the tight car's link is too slow, so the warm car fetches the model
        _job(rig, "first", [variant], uri, replicas=(1, 1), target_tps=20, targets=["Vehicle"])
        status = rig.wait_ready("first", 1, timeout=120)
        assert [p["node"] for p in status["placements"]] == [warm]
        fetched = caches[warm].metric("tokenfleet_modelcache_fetched_bytes_total")
        assert fetched > 0
        rig.custom.delete_namespaced_custom_object(
            "tokenfleet.io", "v1alpha1", rig.namespace, "inferencejobs", "first"
        )
        wait_for(
            lambda: "tinyllama-int4" not in rig.loaded_models(warm), 60, "the first job unloaded"
        )
        report = caches[warm].report()
        assert report is not None and report.holds("tinyllama-int4", int4)  # still cached

        # both cars may download now; the one holding the model wins, and only loads it
        rig.set_telemetry(tight, bandwidth_mbps="400")
        settle(3)
        _job(rig, "second", [variant], uri, replicas=(1, 1), target_tps=20, targets=["Vehicle"])
        status = rig.wait_ready("second", 1, timeout=120)
        assert [p["node"] for p in status["placements"]] == [warm]
        assert caches[warm].metric("tokenfleet_modelcache_fetched_bytes_total") == fetched
        # counted on the cache's next pass, which may come after the runtime loaded the model
        wait_for(
            lambda: caches[warm].metric("tokenfleet_modelcache_hits_total") == 1,
            60,
            "the warm car's cache to count the placement as a hit",
            describe=lambda: caches[warm].log_tail(),
        )
        assert caches[warm].metric("tokenfleet_modelcache_fetched_bytes_total") == fetched
        assert caches[tight].metric("tokenfleet_modelcache_fetched_bytes_total") == 0


# a fetch, a verification and a move on top of the usual: more than the default 300 s when the
# fleet is started for this test alone on a loaded machine
@pytest.mark.timeout(600)
def test_a_prefetched_car_later_gets_the_replica_with_nothing_to_download(
    rig: Rig, operator: OperatorProcess, objstore: ObjectStoreServer
) -> None:
    bucket = f"models-{uuid.uuid4().hex[:6]}"
    int4 = upload_variant(objstore, bucket, "tinyllama", "tinyllama-int4")
    secret = create_store_secret(rig, objstore)
    runtimes = CachedRuntimes(rig.tmp, 2).start()
    rig.tritons = runtimes  # type: ignore[assignment]
    pool = rig.create_pool("pool", delivery={"minBandwidthMbps": 50, "prefetchPerJob": 1})
    fast = {"bandwidth-mbps": "400"}
    cars = [rig.add_vehicle(n, i, pool, telemetry=fast) for i, n in enumerate(("one", "two"))]
    rig.wait_runtime_pods()
    fetched_bytes = "tokenfleet_modelcache_fetched_bytes_total"
    with model_caches(rig, runtimes, {cars[0]: 0, cars[1]: 1}, store_secret=secret) as caches:
        variant = {**VEHICLE_INT4, "sha256": int4}
        uri = f"s3://{bucket}/tinyllama"
        _job(rig, "chat", [variant], uri, replicas=(1, 1), target_tps=20, targets=["Vehicle"])
        status = rig.wait_ready("chat", 1, timeout=120)
        (placed,) = [p["node"] for p in status["placements"]]
        (spare,) = [c for c in cars if c != placed]
        # the operator asks the other plugged-in, fast, long-parked car to prefetch ...
        wait_for(
            lambda: rig.status("chat").get("prefetch") == [{"node": spare, "variant": "int4"}],
            60,
            "the job's status.prefetch to name the spare car",
            describe=lambda: str(rig.status("chat")),
        )
        # ... and its cache fetches and verifies the model (no replica there: not loaded)
        wait_for(
            lambda: (r := caches[spare].report()) is not None and r.holds("tinyllama-int4", int4),
            90,
            "the spare car's cache to hold the prefetched model",
            describe=lambda: caches[spare].log_tail(),
        )
        assert (runtimes.repos[1 - cars.index(placed)] / "tinyllama-int4").is_dir()
        assert "tinyllama-int4" not in rig.loaded_models(spare)
        prefetched = caches[spare].metric(fetched_bytes)
        assert prefetched > 0
        assert caches[spare].metric("tokenfleet_modelcache_misses_total") == 0

        # the serving car is unplugged: the replica moves to the prefetched car, a load only
        rig.set_telemetry(placed, plugged_in="false")
        wait_for(
            lambda: [
                p["node"] for p in rig.status("chat").get("placements") or ()
                if p["state"] == "Loaded"
            ] == [spare],
            120,
            "the replica to move to the prefetched car",
            describe=lambda: str(rig.status("chat")),
        )  # fmt: skip
        assert caches[spare].metric(fetched_bytes) == prefetched  # 0 bytes moved for the move
        # the cache counts the hit on its next pass over the replicas it serves, which may come
        # after the runtime has loaded the model (it was already in the repository)
        wait_for(
            lambda: caches[spare].metric("tokenfleet_modelcache_hits_total") == 1,
            60,
            "the spare car's cache to count the move as a hit",
            describe=lambda: caches[spare].log_tail(),
        )
        assert caches[spare].metric(fetched_bytes) == prefetched
        assert rig.loaded_models(spare) == {"tinyllama-int4"}
        # nothing left to prefetch: the unplugged car may not download, the spare serves
        wait_for(lambda: not rig.status("chat").get("prefetch"), 60, "status.prefetch cleared")


def test_a_signed_variant_reaches_ready_and_a_forged_signature_is_refused(
    rig: Rig, operator: OperatorProcess, objstore: ObjectStoreServer
) -> None:
    """Variants naming an OpenSSF model-signing signature (the publisher's EC P-256 key): one
    signed with it is verified and served; one whose bundle another key signed is refused like a
    digest mismatch (replica Failed VerificationFailed, a Warning Event, the refusal counted)."""
    bucket = f"models-{uuid.uuid4().hex[:6]}"
    publisher = SigningKey.generate(rig.tmp / "keys", "publisher")
    forger = SigningKey.generate(rig.tmp / "keys", "forger")
    good = upload_variant(
        objstore, bucket, "signed", "signed-fp16", sign=lambda d, b: sign_with_key(d, b, publisher)
    )
    forged = upload_variant(
        objstore, bucket, "forged", "forged-fp16", sign=lambda d, b: sign_with_key(d, b, forger)
    )
    trust = {"publicKey": publisher.public_pem}
    secret = create_store_secret(rig, objstore)
    runtimes = CachedRuntimes(rig.tmp, 1).start()
    rig.tritons = runtimes  # type: ignore[assignment]
    rig.start_sim(["unused"])
    rack = rig.add_rack("rack", 0, rig.create_tank("tank"))
    rig.wait_runtime_pods()
    with model_caches(rig, runtimes, {rack: 0}, store_secret=secret) as caches:
        _job(
            rig,
            "signed",
            [{**RACK_FP16, "sha256": good, "signature": trust}],
            f"s3://{bucket}/signed",
            replicas=(1, 1),
            target_tps=20,
            model="signed",
        )
        rig.wait_ready("signed", 1, timeout=150)
        assert rig.loaded_models(rack) == {"signed-fp16"}
        installed = runtimes.repos[0] / "signed-fp16"
        assert (installed / "1" / "model.py").is_file() and not (installed / "model.sig").exists()

        _job(
            rig,
            "forged",
            [{**RACK_FP16, "sha256": forged, "signature": trust}],
            f"s3://{bucket}/forged",
            replicas=(1, 1),
            target_tps=20,
            model="forged",
        )
        reported: list[Any] = []

        def refused() -> dict[str, Any] | None:
            report = caches[rack].report()
            entry = report.models.get("forged-fp16") if report is not None else None
            if entry is not None and entry.state is CacheState.FAILED:
                reported.append(entry)
            p = _placement(rig, "forged", rack)
            return p if p and p["state"] == "Failed" and reported else None

        failed = wait_for(
            refused, 90, "the forged replica to fail", describe=lambda: rig.status("forged")
        )
        assert failed["reason"] == "VerificationFailed", failed
        assert "SignatureInvalid" in failed["message"], failed
        assert {e.reason for e in reported} == {"SignatureInvalid"}, reported
        assert not (runtimes.repos[0] / "forged-fp16").exists()
        assert rig.loaded_models(rack) == {"signed-fp16"}
        assert caches[rack].metric("tokenfleet_modelcache_verification_failures_total") == 1
        events = [e for e in rig.events("forged") if e.get("reason") == "VerificationFailed"]
        assert events and all(e.get("type") == "Warning" for e in events), events
        assert (
            operator.metric("tokenfleet_model_delivery_refused_total", reason="VerificationFailed")
            >= 1
        )
