"""The failure ledger: failed runtimes and per-(job, node) load back-offs, on a manual clock."""

from __future__ import annotations

from tokenfleet.clock import ManualClock
from tokenfleet.controllers.failures import FailureLedger


def test_a_failed_runtime_is_avoided_for_the_back_off_then_trusted_again() -> None:
    clock = ManualClock(0.0, 100.0)
    ledger = FailureLedger(60.0, clock)
    assert ledger.runtime_failure("car-1") is True
    assert ledger.runtime_failure("car-1") is False  # already failed: not news
    assert ledger.runtime_failed("car-1") and not ledger.runtime_failed("car-2")
    clock.advance(60.0)
    assert not ledger.runtime_failed("car-1")  # the back-off is over
    clock.advance(1.0)
    assert ledger.runtime_failure("car-1") is True  # a new failure is news again


def test_load_back_off_doubles_up_to_eight_times_and_resets() -> None:
    clock = ManualClock(0.0, 0.0)
    ledger = FailureLedger(10.0, clock)
    untils = [ledger.load_failure("ns/a", "car-1", f"try {n}").until for n in range(5)]
    assert untils == [10.0, 20.0, 40.0, 80.0, 80.0]
    assert ledger.load_failed("ns/a", "car-1") and not ledger.load_failed("ns/b", "car-1")
    node, backoff = ledger.latest_load_failure("ns/a")  # type: ignore[misc]
    assert node == "car-1" and backoff.message == "try 4" and backoff.failures == 5
    ledger.load_succeeded("ns/a", "car-1")
    assert ledger.latest_load_failure("ns/a") is None


def test_a_new_generation_or_a_gone_job_starts_over() -> None:
    clock = ManualClock(0.0, 0.0)
    ledger = FailureLedger(10.0, clock)
    ledger.load_failure("ns/a", "car-1", "x")
    ledger.load_failure("ns/b", "car-2", "x")
    assert ledger.avoid_nodes({"ns/a": 1, "ns/b": 1}, {"ns/a": 1, "ns/b": 1}) == {
        "ns/a": frozenset({"car-1"}),
        "ns/b": frozenset({"car-2"}),
    }
    assert ledger.avoid_nodes({"ns/a": 2}, {"ns/a": 1, "ns/b": 1}) == {}
    assert not ledger.load_failed("ns/a", "car-1") and not ledger.load_failed("ns/b", "car-2")
