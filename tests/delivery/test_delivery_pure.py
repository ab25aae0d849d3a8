"""Model delivery's pure parts: the variant digest, LRU under a budget, the may-a-car-download
rule, the node annotation and the operator's gate."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from tokenfleet.delivery.digest import DigestError, manifest, tree_digest
from tokenfleet.delivery.gate import GateAction, gate
from tokenfleet.delivery.lru import CachedModel, plan_evictions
from tokenfleet.delivery.report import (
    CacheEntry,
    CacheReport,
    CacheState,
    decode_report,
    encode_report,
)
from tokenfleet.delivery.rules import FetchWindow, NoFetch, fetch_seconds, may_fetch
from tokenfleet.delivery.wants import fetch_window, wanted_on

GB = 1_000_000_000
NOW = 1_800_000_000.0


# ---- digest ---------------------------------------------------------------------------------


def _model_dir(root: Path) -> Path:
    (root / "1").mkdir(parents=True)
    (root / "config.pbtxt").write_text('name: "m"\n')
    (root / "1" / "model.py").write_bytes(b"print('hi')\n" * 1000)
    return root


def test_tree_digest_is_the_documented_manifest_and_matches_sha256sum(tmp_path: Path) -> None:
    root = _model_dir(tmp_path / "m")
    files = {
        "1/model.py": hashlib.sha256((root / "1" / "model.py").read_bytes()).hexdigest(),
        "config.pbtxt": hashlib.sha256((root / "config.pbtxt").read_bytes()).hexdigest(),
    }
    text = manifest(files.items())
    expected = f"{files['1/model.py']}  1/model.py\n{files['config.pbtxt']}  config.pbtxt\n"
    assert text == expected.encode()
    assert tree_digest(root) == hashlib.sha256(text).hexdigest()
    # the shell recipe in the docstring gives the same digest
    shell = subprocess.run(
        "find . -type f | sed 's#^\\./##' | LC_ALL=C sort | xargs sha256sum | sha256sum",
        shell=True,
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    assert tree_digest(root) == shell


def test_tree_digest_changes_with_one_byte_or_a_rename(tmp_path: Path) -> None:
    root = _model_dir(tmp_path / "m")
    before = tree_digest(root)
    (root / "1" / "model.py").write_bytes(b"print('hi')\n" * 999 + b"print('hI')\n")
    tampered = tree_digest(root)
    assert tampered != before
    (root / "config.pbtxt").rename(root / "config2.pbtxt")
    assert tree_digest(root) not in (before, tampered)


def test_tree_digest_refuses_symlinks(tmp_path: Path) -> None:
    root = _model_dir(tmp_path / "m")
    (root / "link").symlink_to(root / "config.pbtxt")
    with pytest.raises(DigestError, match="not a regular file"):
        tree_digest(root)


# ---- LRU ------------------------------------------------------------------------------------


def test_lru_evicts_least_recently_used_not_in_use_until_it_fits() -> None:
    cached = [
        CachedModel("a", 4 * GB, last_used=100),
        CachedModel("b", 4 * GB, last_used=50, in_use=True),
        CachedModel("c", 4 * GB, last_used=10),
        CachedModel("d", 2 * GB, last_used=200),
    ]
    assert plan_evictions(cached, 2 * GB, 20 * GB).evict == ()
    plan = plan_evictions(cached, 6 * GB, 16 * GB)
    assert plan.fits and plan.evict == ("c",)  # oldest first; b is in use
    plan = plan_evictions(cached, 9 * GB, 16 * GB)
    assert plan.fits and plan.evict == ("c", "a")
    # even evicting everything not in use leaves no room: nothing is evicted
    assert plan_evictions(cached, 13 * GB, 16 * GB).fits is False
    assert plan_evictions(cached, 13 * GB, 16 * GB).evict == ()


def test_lru_counts_downloads_in_flight() -> None:
    cached = [CachedModel("a", 4 * GB, last_used=1)]
    assert plan_evictions(cached, 4 * GB, 10 * GB, reserved_bytes=3 * GB).evict == ("a",)


# ---- may a car download ---------------------------------------------------------------------


def _window(**kw: object) -> FetchWindow:
    base: dict[str, object] = dict(
        plugged_in=True,
        bandwidth_mbps=100.0,
        departure_time=NOW + 4 * 3600,
        drain_lead_seconds=900.0,
        min_bandwidth_mbps=20.0,
        margin_percent=150.0,
    )
    base.update(kw)
    return FetchWindow(**base)  # type: ignore[arg-type]


def test_fetch_seconds_is_size_over_bandwidth_with_margin() -> None:
    assert fetch_seconds(4 * GB, 100.0) == pytest.approx(320.0)
    assert fetch_seconds(4 * GB, 100.0, 150.0) == pytest.approx(480.0)
    assert fetch_seconds(0, 0.0) == 0.0
    assert fetch_seconds(1, 0.0) == float("inf")


def test_a_rack_always_may_fetch_and_nothing_left_is_always_fine() -> None:
    assert may_fetch(None, 100 * GB, NOW).ok
    assert may_fetch(_window(plugged_in=False), 0, NOW).ok


@pytest.mark.parametrize(
    ("window", "reason"),
    [
        (_window(plugged_in=False), NoFetch.NOT_PLUGGED_IN),
        (_window(plugged_in=None), NoFetch.NOT_PLUGGED_IN),
        (_window(bandwidth_mbps=None), NoFetch.UNKNOWN_LINK),
        (_window(bandwidth_mbps=19.9), NoFetch.LOW_BANDWIDTH),
        (_window(departure_time=None), NoFetch.DEPARTS_BEFORE_FETCH),
        # 4 GB at 100 Mbit/s x 1.5 = 480 s; 900 s lead + 479 s: does not finish
        (_window(departure_time=NOW + 900 + 479), NoFetch.DEPARTS_BEFORE_FETCH),
    ],
)
def test_a_car_may_not_fetch(window: FetchWindow, reason: NoFetch) -> None:
    verdict = may_fetch(window, 4 * GB, NOW)
    assert not verdict.ok and verdict.reason is reason and verdict.message


def test_a_car_may_fetch_when_it_finishes_before_departure_less_the_lead() -> None:
    assert may_fetch(_window(departure_time=NOW + 900 + 480), 4 * GB, NOW).ok
    assert may_fetch(_window(plugged_in=False, require_plugged_in=False), 4 * GB, NOW).ok
    assert may_fetch(_window(bandwidth_mbps=20.0), 1 * GB, NOW).ok


# ---- annotation and gate --------------------------------------------------------------------

SHA = "ab" * 32
OTHER = "cd" * 32


def test_report_round_trips_and_garbage_is_none() -> None:
    report = CacheReport(
        10 * GB,
        4 * GB,
        {
            "m-int4": CacheEntry(CacheState.READY, SHA[:16], 4 * GB, 4 * GB),
            "x-int4": CacheEntry(CacheState.FETCHING, OTHER[:16], 10, 100),
            "bad": CacheEntry(CacheState.FAILED, SHA[:16], reason="DigestMismatch", message="no"),
        },
    )
    text = encode_report(report)
    assert len(text) < 400
    assert decode_report(text) == report
    assert decode_report(text).holds("m-int4", SHA)  # type: ignore[union-attr]
    assert not decode_report(text).holds("m-int4", OTHER)  # type: ignore[union-attr]
    for garbage in (None, "", "{", "[]", '{"v":2}'):
        assert decode_report(garbage) is None
    odd = decode_report('{"v":1,"models":{"a":{"s":"Nope","d":"x"},"b":{"s":"Ready"}}}')
    assert odd is not None and odd.models == {}


def test_gate() -> None:
    assert gate(None, "m", SHA).action is GateAction.LOAD  # no cache on the node
    empty = CacheReport(GB, 0, {})
    assert gate(empty, "m", SHA).action is GateAction.WAIT

    def one(entry: CacheEntry) -> CacheReport:
        return CacheReport(GB, 0, {"m": entry})

    assert gate(one(CacheEntry(CacheState.READY, SHA[:16])), "m", SHA).action is GateAction.LOAD
    other = gate(one(CacheEntry(CacheState.READY, OTHER[:16])), "m", SHA)
    assert other.action is GateAction.WAIT  # another build: never load the wrong one
    fetching = gate(one(CacheEntry(CacheState.FETCHING, SHA[:16], 5, 10)), "m", SHA)
    assert (fetching.action, fetching.reason) == (GateAction.WAIT, "Fetching")
    verifying = gate(one(CacheEntry(CacheState.VERIFYING, SHA[:16])), "m", SHA)
    assert verifying.reason == "Verifying"
    refused = gate(
        one(CacheEntry(CacheState.FAILED, SHA[:16], reason="DigestMismatch", message="got x")),
        "m",
        SHA,
    )
    assert refused.action is GateAction.REFUSE and refused.reason == "VerificationFailed"
    assert refused.message is not None and "DigestMismatch" in refused.message
    missing = gate(one(CacheEntry(CacheState.FAILED, SHA[:16], reason="NotInStore")), "m", SHA)
    assert missing.reason == "ModelDeliveryFailed"


# ---- wants and windows ----------------------------------------------------------------------


def _job(node: str, state: str, uri: str = "s3://models/tiny") -> dict[str, object]:
    return {
        "spec": {
            "model": {"name": "tiny", "repositoryUri": uri},
            "variants": [
                {"name": "int4", "sha256": SHA},
                {"name": "fp16", "tritonModelName": "tiny-big"},
            ],
        },
        "status": {
            "placements": [
                {"node": node, "variant": "int4", "state": state},
                {"node": "other", "variant": "fp16", "state": "Loaded"},
            ]
        },
    }


def test_wanted_on_reads_placements_of_store_delivered_jobs() -> None:
    wants = wanted_on("car-1", [_job("car-1", "Loading"), _job("car-1", "Loaded")])
    assert [(w.model, w.repository_uri, w.sha256) for w in wants] == [
        ("tiny-int4", "s3://models/tiny", SHA)
    ]
    assert wanted_on("car-1", [_job("car-1", "Failed")]) == []
    assert wanted_on("car-1", [_job("car-1", "Loading", uri="file:///models")]) == []
    assert [w.model for w in wanted_on("other", [_job("car-1", "Loaded")])] == ["tiny-big"]


def test_fetch_window_of_a_car_takes_its_pools_policy() -> None:
    node = {
        "metadata": {
            "name": "car-1",
            "labels": {"tokenfleet.io/role": "vehicle", "tokenfleet.io/pool": "pool-a"},
            "annotations": {
                "telemetry.tokenfleet.io/plugged-in": "true",
                "telemetry.tokenfleet.io/bandwidth-mbps": "42",
                "telemetry.tokenfleet.io/departure-time": "2030-01-01T00:00:00Z",
            },
        }
    }
    pool = {
        "spec": {
            "nodeSelector": {"tokenfleet.io/pool": "pool-a"},
            "drainLeadSeconds": 600,
            "delivery": {"minBandwidthMbps": 50, "fetchTimeMarginPercent": 120},
        }
    }
    window = fetch_window(node, [pool])
    assert window is not None
    assert (window.plugged_in, window.bandwidth_mbps, window.min_bandwidth_mbps) == (
        True,
        42.0,
        50.0,
    )
    assert (window.drain_lead_seconds, window.margin_percent) == (600.0, 120.0)
    assert may_fetch(window, GB, NOW).reason is NoFetch.LOW_BANDWIDTH
    # no pool selects it: nothing is allowed (unknown never counts as good)
    orphan = fetch_window(node, [])
    assert orphan is not None and may_fetch(orphan, GB, NOW).reason is NoFetch.LOW_BANDWIDTH
    rack = {"metadata": {"name": "r", "labels": {"tokenfleet.io/role": "rack"}}}
    assert fetch_window(rack, [pool]) is None
