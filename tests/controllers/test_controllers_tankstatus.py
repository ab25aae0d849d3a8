"""Each condition of a tank's status (controllers/tankstatus.py), one function at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tokenfleet.api import parse_immersionpod_spec
from tokenfleet.api.conditions import get_condition
from tokenfleet.api.models import ImmersionPodSpec
from tokenfleet.controllers.tankstatus import (
    ConditionValue,
    PollOutcome,
    cordoned,
    desired_status,
    effective_leak,
    leak_detected,
    measured_status,
    ready,
    telemetry_fresh,
)
from tokenfleet.telemetry.immersion import Health, LeakDetector, LeakState, TankReading

T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
FRESH = ConditionValue("True", "ReadingFresh", "all fields valid")
NO_LEAK = ConditionValue("False", "NoLeak", "all leak detectors OK")
NOT_CORDONED = ConditionValue("False", "NotCordoned", "")
LATCH = {
    "state": "Critical",
    "latchedAt": "2026-11-25T11:00:00Z",
    "message": "detectors: a=Critical",
}


def spec(**overrides: Any) -> ImmersionPodSpec:
    raw: dict[str, Any] = {
        "site": "factory",
        "region": "eu-central",
        "nodeSelector": {"tokenfleet.io/tank": "tank-a"},
        "power": {"capacityKW": 180, "safetyMarginPercent": 10},
        "coolant": {
            "maxSupplyTempC": 40,
            "maxReturnTempC": 55,
            "designFlowLitersPerMinute": 480,
            "heatRejectionKW": 200,
        },
        "telemetry": {
            "source": "Redfish",
            "redfish": {"endpoint": "http://127.0.0.1:1", "unitId": "tank-a"},
            "pollIntervalSeconds": 15,
            "staleAfterSeconds": 60,
        },
        "leakPolicy": {"action": "Drain"},
    }
    raw.update(overrides)
    return parse_immersionpod_spec(raw)


def reading(leak: LeakState = LeakState.OK, **kw: Any) -> TankReading:
    detectors = (LeakDetector("a", Health.CRITICAL if leak.is_leak else Health.OK),)
    values: dict[str, Any] = {
        "supply_temp_c": 30.0,
        "return_temp_c": 40.0,
        "flow_lpm": 300.0,
        "heat_removed_kw": 100.0,
    }
    values.update(kw)
    return TankReading("tank-a", T0, leak_state=leak, leak_detectors=detectors, **values)


# ---- measured fields ----------------------------------------------------------------------------


def test_measured_fields_come_from_the_reading() -> None:
    fields, at = measured_status(spec(), reading(), {})
    assert at == T0 and fields["lastReadingTime"] == "2026-11-25T12:00:00Z"
    assert fields["itLoadKW"] == 100.0 and fields["powerHeadroomKW"] == 62.0
    assert fields["leakState"] == "OK"


def test_without_a_reading_the_stored_values_stay_judged_by_their_age() -> None:
    stored = {"itLoadKW": 90.0, "leakState": "OK", "lastReadingTime": "2026-11-25T11:59:00Z"}
    fields, at = measured_status(spec(), None, stored)
    assert fields == stored and at == T0 - timedelta(minutes=1)
    fields, at = measured_status(spec(), None, {"itLoadKW": 90.0})
    assert at is None and fields["leakState"] == "Unknown"


# ---- TelemetryFresh -----------------------------------------------------------------------------


def test_telemetry_fresh_cases() -> None:
    first = telemetry_fresh(PollOutcome(), None, 60)
    assert first == ConditionValue("Unknown", "AwaitingFirstPoll", "no reading yet")
    ok = PollOutcome(reading(), None, T0)
    assert telemetry_fresh(ok, 10, 60) == FRESH
    failed_recently = PollOutcome(reading(), "connection refused", T0)
    assert telemetry_fresh(failed_recently, 10, 60) == ConditionValue(
        "True", "ReadingFresh", "all fields valid; last poll failed: connection refused"
    )
    assert telemetry_fresh(failed_recently, 61, 60) == ConditionValue(
        "False", "TelemetryUnreachable", "connection refused"
    )
    assert telemetry_fresh(PollOutcome(None, None, T0), None, 60) == ConditionValue(
        "False", "NoReading", "no successful reading"
    )
    assert telemetry_fresh(ok, 61, 60) == ConditionValue(
        "False", "TelemetryStale", "no reading within 60s"
    )


# ---- LeakDetected -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("leak", "expected"),
    [
        (LeakState.CRITICAL, ("True", "LeakCritical", "detectors: a=Critical")),
        (LeakState.OK, ("False", "NoLeak", "all leak detectors OK")),
        (
            LeakState.UNKNOWN,
            ("Unknown", "LeakDetectorsUnreadable", "leak detectors could not be read"),
        ),
    ],
)
def test_leak_detected(leak: LeakState, expected: tuple[str, str, str]) -> None:
    assert leak_detected(leak, reading(leak)) == expected


def test_the_effective_leak_is_the_worse_of_live_and_latched() -> None:
    assert effective_leak(LeakState.OK, LATCH) is LeakState.CRITICAL
    assert effective_leak(LeakState.CRITICAL, {"state": "Warning"}) is LeakState.CRITICAL
    assert effective_leak(LeakState.OK, None) is LeakState.OK


# ---- Cordoned -----------------------------------------------------------------------------------


def test_cordoned_by_a_live_leak() -> None:
    c = cordoned(spec(), LeakState.CRITICAL, None, "tank-a")
    assert c == ("True", "LeakDetected", "leak Critical: no new placements; replicas are drained")
    cordon = spec(leakPolicy={"action": "Cordon"})
    assert cordoned(cordon, LeakState.WARNING, None, "tank-a").message.endswith(
        "replicas stay (Cordon)"
    )
    latched = cordoned(spec(), LeakState.CRITICAL, LATCH, "tank-a")
    assert "; latched: once every detector reads OK, after inspecting the tank" in latched.message


def test_cordoned_by_a_latch_says_how_to_clear_it() -> None:
    c = cordoned(spec(), LeakState.OK, LATCH, "tank-a")
    assert (c.status, c.reason) == ("True", "LeakLatched")
    assert c.message.startswith(
        "leak Critical latched at 2026-11-25T11:00:00Z (detectors: a=Critical), detectors now OK:"
        " no new placements; replicas are drained; after inspecting the tank, clear it: kubectl"
        " annotate immersionpod tank-a tokenfleet.io/leak-acknowledged="
    )
    warning = cordoned(spec(), LeakState.OK, {**LATCH, "state": "Warning"}, "tank-a")
    assert "replicas stay (a Warning latch does not drain)" in warning.message


def test_cordoned_by_spec_or_not_at_all() -> None:
    assert cordoned(spec(cordoned=True), LeakState.OK, None, "t") == (
        "True",
        "SpecCordoned",
        "spec.cordoned is true: no new placements",
    )
    assert cordoned(spec(), LeakState.OK, None, "t") == NOT_CORDONED


# ---- Ready --------------------------------------------------------------------------------------


def _ready(**kw: Any) -> ConditionValue:
    args: dict[str, Any] = {
        "spec": spec(),
        "leak": LeakState.OK,
        "latch": None,
        "fresh": FRESH,
        "leak_condition": NO_LEAK,
        "cordon": NOT_CORDONED,
        "headroom_known": True,
    }
    args.update(kw)
    return ready(**args)


def test_ready_names_the_first_reason_the_tank_takes_no_new_placements() -> None:
    leak_cordon = ConditionValue("True", "LeakDetected", "leak Critical: ...")
    assert _ready(leak=LeakState.CRITICAL, cordon=leak_cordon) == (
        "False",
        "LeakDetected",
        "leak Critical: ...",
    )
    assert _ready(latch=LATCH).reason == "LeakLatched"
    assert _ready(spec=spec(cordoned=True)).reason == "Cordoned"
    stale = ConditionValue("False", "TelemetryStale", "no reading within 60s")
    assert _ready(fresh=stale) == stale._replace(status="False")
    unreadable = leak_detected(LeakState.UNKNOWN, None)
    assert _ready(leak=LeakState.UNKNOWN, leak_condition=unreadable) == (
        "False",
        "LeakDetectorsUnreadable",
        "leak detectors could not be read",
    )
    assert _ready(headroom_known=False).reason == "HeadroomUnknown"
    assert _ready() == ("True", "Accepting", "telemetry fresh, no leak, headroom known")


# ---- the whole status ---------------------------------------------------------------------------


def test_desired_status_composes_the_conditions_and_the_latch() -> None:
    status = desired_status(
        spec=spec(),
        generation=2,
        current={"conditions": [{"type": "Stalled", "status": "True"}]},
        outcome=PollOutcome(reading(LeakState.CRITICAL), None, T0),
        now=T0 + timedelta(seconds=5),
        nodes=3,
        replicas=1,
        name="tank-a",
    )
    assert status["telemetryAgeSeconds"] == 5 and status["nodes"] == 3
    assert status["leakLatch"]["state"] == "Critical"
    conditions = status["conditions"]
    assert get_condition(conditions, "Stalled") is None
    ready_ = get_condition(conditions, "Ready")
    assert ready_ is not None and (ready_["status"], ready_["reason"]) == ("False", "LeakDetected")
    assert [c["type"] for c in conditions] == [
        "Ready",
        "TelemetryFresh",
        "LeakDetected",
        "Cordoned",
    ]
