"""ImmersionPod telemetry controller logic against the Redfish simulator (real loopback HTTP).

The kopf wiring (timer -> patch.status) is exercised end-to-end in e2e/; here TankPoller.tick is
driven directly with a controllable clock and the status it returns is fed back as the stored
status, exactly as the timer does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from e2e.sim.tank import TankSimulator

from tokenfleet.api.conditions import get_condition
from tokenfleet.api.models import LeakSeverity
from tokenfleet.controllers.tankpoller import TankPoller, acknowledgement_refusal, needs_write
from tokenfleet.controllers.tankstatus import PollOutcome, next_latch
from tokenfleet.metrics import TANK_LEAK_ACKNOWLEDGEMENTS, TANK_LEAK_LATCHED, TELEMETRY_REJECTED
from tokenfleet.telemetry.immersion import Health, LeakDetector, LeakState, TankReading

T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def tank_spec(endpoint: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
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
            "redfish": {"endpoint": endpoint, "unitId": "tank-a", "timeoutSeconds": 1},
            "pollIntervalSeconds": 15,
            "staleAfterSeconds": 60,
        },
        "leakPolicy": {"action": "Drain"},
    }
    spec.update(overrides)
    return spec


class Harness:
    def __init__(self, sim: TankSimulator, **spec_overrides: Any) -> None:
        self.sim = sim
        self.now = T0
        self.mono = 0.0
        self.events: list[tuple[str, str]] = []
        self.infos: list[tuple[str, str]] = []
        self.spec = tank_spec(sim.url, **spec_overrides)
        self.status: dict[str, Any] = {}
        self.writes: list[dict[str, Any]] = []
        self.poller = TankPoller(
            name="tank-a",
            warn=lambda reason, message: self.events.append((reason, message)),
            clock=lambda: self.now,
            monotonic=lambda: self.mono,
            info=lambda reason, message: self.infos.append((reason, message)),
        )

    async def tick(
        self,
        advance: float = 0.0,
        generation: int = 1,
        *,
        ack: str | None = None,
        version: str | None = None,
    ) -> dict[str, Any] | None:
        self.now += timedelta(seconds=advance)
        self.mono += advance
        patch = await self.poller.tick(
            spec=self.spec,
            status=self.status,
            generation=generation,
            nodes=3,
            ack=ack,
            ack_version=version,
        )
        if patch is not None:
            self.writes.append(patch)
            for key, value in patch.items():
                if value is None:
                    self.status.pop(key, None)
                else:
                    self.status[key] = value
        return patch

    def condition(self, type_: str) -> tuple[str, str]:
        c = get_condition(self.status.get("conditions"), type_)
        assert c is not None, type_
        return c["status"], c["reason"]


@pytest.fixture
async def sim() -> AsyncIterator[TankSimulator]:
    async with TankSimulator(["tank-a"]) as simulator:
        # 300 L/min, 32 -> 40 °C, 60 kW removed
        yield simulator


async def test_first_poll_writes_full_status(sim: TankSimulator) -> None:
    h = Harness(sim)
    assert await h.tick() is not None
    s = h.status
    assert s["observedGeneration"] == 1 and s["nodes"] == 3
    assert s["itLoadKW"] == 60.0
    assert s["powerHeadroomKW"] == 102.0  # 180 * 0.9 - 60
    # thermal: min(200, 300/60 * 0.8 * 2.1 * (55 - 32) = 193.2) - 60
    assert s["thermalHeadroomKW"] == pytest.approx(133.2)
    assert (s["supplyTempC"], s["returnTempC"], s["flowLitersPerMinute"]) == (32.0, 40.0, 300.0)
    assert s["leakState"] == "OK"
    assert s["lastReadingTime"] == "2026-11-25T12:00:00Z" and s["telemetryAgeSeconds"] == 0
    assert h.condition("Ready") == ("True", "Accepting")
    assert h.condition("TelemetryFresh") == ("True", "ReadingFresh")
    assert h.condition("LeakDetected") == ("False", "NoLeak")
    assert h.condition("Cordoned") == ("False", "NotCordoned")
    assert h.events == []


async def test_no_write_without_change_and_polls_at_interval(sim: TankSimulator) -> None:
    h = Harness(sim)
    await h.tick()
    requests = sim.tank("tank-a").requests
    for _ in range(14):
        assert await h.tick(1.0) is None
    assert sim.tank("tank-a").requests == requests  # not due yet
    sim.set("tank-a", supply_c=32.2, heat_kw=60.4)  # inside the deadband
    assert await h.tick(1.0) is None  # polled at 15 s, nothing moved enough
    assert sim.tank("tank-a").requests > requests
    sim.set("tank-a", heat_kw=61.0)
    assert await h.tick(15.0) is not None
    assert h.status["itLoadKW"] == 61.0


async def test_quiet_at_rest_last_reading_time_only_with_a_deadband(sim: TankSimulator) -> None:
    """A tank at rest is polled every 15 s but its status is not rewritten per poll: the
    reading's time is refreshed every REFRESH_MIN_SECONDS (5 min), TelemetryFresh stays True."""
    h = Harness(sim)
    await h.tick()
    for _ in range(19):  # 285 s of polls, nothing a reader acts on changed
        assert await h.tick(15.0) is None
    assert await h.tick(15.0) is not None  # 300 s: the deadband refresh
    assert h.status["lastReadingTime"] == "2026-11-25T12:05:00Z"
    fresh = next(c for c in h.status["conditions"] if c["type"] == "TelemetryFresh")
    assert fresh["status"] == "True"


async def test_garbage_fields_are_dropped_one_by_one_with_events(sim: TankSimulator) -> None:
    h = Harness(sim)
    await h.tick()
    before = TELEMETRY_REJECTED.labels("tank", "SupplyTemperatureCelsius", "NonFinite")._value.get()
    sim.set("tank-a", supply_c=float("nan"), heat_kw="garbage")
    assert await h.tick(15.0) is not None
    s = h.status
    assert "supplyTempC" not in s  # removed: unknown
    assert s["returnTempC"] == 40.0 and s["flowLitersPerMinute"] == 300.0
    assert "itLoadKW" not in s  # no heat and no supply: IT load unknown, never a guess
    assert "powerHeadroomKW" not in s and "thermalHeadroomKW" not in s
    assert h.condition("TelemetryFresh") == ("True", "PartialReading")
    assert h.condition("Ready") == ("False", "HeadroomUnknown")
    ((reason, message),) = h.events
    assert reason == "TelemetryRejected"
    assert "SupplyTemperatureCelsius='nan': NonFinite" in message
    assert "HeatRemovedkW='garbage': Unparsable" in message
    after = TELEMETRY_REJECTED.labels("tank", "SupplyTemperatureCelsius", "NonFinite")._value.get()
    assert after == before + 1
    # same problems again: no new Event
    await h.tick(15.0)
    assert len(h.events) == 1
    # only heat bad: IT load from the flow (300/60*0.8*2.1*(40-32) = 67.2 kW)
    sim.set("tank-a", supply_c=32.0, missing=["HeatRemovedkW"])
    await h.tick(15.0)
    assert h.status["itLoadKW"] == pytest.approx(67.2)
    assert h.condition("Ready") == ("True", "Accepting")
    assert h.events[-1][0] == "TelemetryRejected" and "HeatRemovedkW: Missing" in h.events[-1][1]


async def test_leak_cordons_and_a_warning_recovers(sim: TankSimulator) -> None:
    h = Harness(sim)
    await h.tick()
    sim.set_leak("tank-a", "Moisture1", "Warning")
    assert await h.tick(15.0) is not None
    assert h.status["leakState"] == "Warning"
    assert h.condition("LeakDetected") == ("True", "LeakWarning")
    assert h.condition("Cordoned") == ("True", "LeakDetected")
    assert h.condition("Ready") == ("False", "LeakDetected")
    assert h.events[-1][0] == "LeakDetected" and "Moisture1=Warning" in h.events[-1][1]
    assert "leakLatch" not in h.status  # below leakPolicy.latchOn (Critical): not latched
    sim.set("tank-a", leak={"Moisture1": "OK", "FloatSwitch1": "OK"})
    await h.tick(15.0)
    assert h.status["leakState"] == "OK"
    assert h.condition("Cordoned") == ("False", "NotCordoned")
    assert h.condition("Ready") == ("True", "Accepting")
    sim.set_leak("tank-a", "FloatSwitch1", "Critical")
    await h.tick(15.0)
    assert h.status["leakState"] == "Critical"
    assert "replicas are drained" in get_condition(h.status["conditions"], "Cordoned")["message"]  # type: ignore[index]
    sim.set("tank-a", leak={"Moisture1": "OK", "FloatSwitch1": "OK"})
    await h.tick(15.0)
    assert h.status["leakState"] == "OK"
    assert h.condition("Cordoned") == ("True", "LeakLatched")  # a Critical leak latches
    assert h.condition("Ready") == ("False", "LeakLatched")


async def test_leak_detectors_unreadable_is_unknown_not_ok(sim: TankSimulator) -> None:
    h = Harness(sim)
    sim.set("tank-a", missing=["LeakDetectors"])
    await h.tick()
    assert h.status["leakState"] == "Unknown"
    assert h.condition("LeakDetected") == ("Unknown", "LeakDetectorsUnreadable")
    assert h.condition("Ready") == ("False", "LeakDetectorsUnreadable")


async def test_unreachable_then_stale_keeps_values_and_never_evicts(sim: TankSimulator) -> None:
    h = Harness(sim)
    await h.tick()
    sim.set("tank-a", http_status=500)
    assert await h.tick(15.0) is not None  # message changes; the reading is still valid
    assert h.condition("TelemetryFresh") == ("True", "ReadingFresh")
    fresh = get_condition(h.status["conditions"], "TelemetryFresh")
    assert fresh is not None and "last poll failed" in fresh["message"]
    assert h.condition("Ready") == ("True", "Accepting")
    assert h.events[-1][0] == "TelemetryUnreachable" and "HTTP 500" in h.events[-1][1]
    for _ in range(3):
        await h.tick(15.0)  # 30, 45, 60 s: still within staleAfterSeconds
    assert h.condition("TelemetryFresh")[0] == "True"
    await h.tick(15.0)  # 75 s
    assert h.condition("TelemetryFresh") == ("False", "TelemetryUnreachable")
    assert h.condition("Ready") == ("False", "TelemetryUnreachable")
    # the old reading is kept with its time: consumers judge it by age
    assert h.status["lastReadingTime"] == "2026-11-25T12:00:00Z"
    assert h.status["telemetryAgeSeconds"] == 75
    assert h.status["itLoadKW"] == 60.0 and h.status["leakState"] == "OK"
    assert h.condition("Cordoned") == ("False", "NotCordoned")  # no eviction on a guess
    assert [e for e, _ in h.events].count("TelemetryUnreachable") == 1  # one per distinct error
    writes = len(h.writes)
    await h.tick(15.0)
    assert len(h.writes) == writes  # stale and unchanged: no write
    sim.set("tank-a", http_status=200)
    await h.tick(15.0)
    assert h.condition("TelemetryFresh") == ("True", "ReadingFresh")
    assert h.condition("Ready") == ("True", "Accepting")


async def test_status_from_before_a_restart_goes_stale(sim: TankSimulator) -> None:
    h = Harness(sim)
    await h.tick()
    sim.set("tank-a", http_status=503)
    restarted = Harness(sim)
    restarted.status = dict(h.status)
    restarted.now = h.now + timedelta(seconds=90)
    await restarted.tick()
    assert restarted.condition("TelemetryFresh") == ("False", "TelemetryUnreachable")
    assert restarted.status["itLoadKW"] == 60.0  # kept, judged by its age
    assert restarted.status["telemetryAgeSeconds"] == 90


async def test_timeout_is_unreachable(sim: TankSimulator) -> None:
    h = Harness(sim)
    sim.set("tank-a", delay_seconds=3.0)
    await h.tick()
    assert h.condition("TelemetryFresh") == ("False", "TelemetryUnreachable")
    assert "timed out" in h.events[-1][1]
    assert h.status["leakState"] == "Unknown"


async def test_spec_cordoned_and_generation(sim: TankSimulator) -> None:
    h = Harness(sim)
    await h.tick()
    h.spec["cordoned"] = True
    assert await h.tick(1.0, generation=2) is not None  # spec change written before next poll
    assert h.status["observedGeneration"] == 2
    assert h.condition("Cordoned") == ("True", "SpecCordoned")
    assert h.condition("Ready") == ("False", "Cordoned")


async def test_invalid_spec(sim: TankSimulator) -> None:
    h = Harness(sim)
    h.spec["power"] = {"capacityKW": -1}
    assert await h.tick() is not None
    assert h.condition("Ready") == ("False", "InvalidSpec")
    assert h.events[0][0] == "InvalidSpec"
    assert await h.tick(1.0) is None
    assert sim.tank("tank-a").requests == 0
    # permanent until the spec changes: Stalled (kstatus Failed, Argo CD Degraded)
    assert h.condition("Stalled") == ("True", "InvalidSpec")
    h.spec["power"] = {"capacityKW": 180, "safetyMarginPercent": 10}
    assert await h.tick(1.0, generation=2) is not None
    assert h.condition("Ready") == ("True", "Accepting")
    assert get_condition(h.status["conditions"], "Stalled") is None


def test_needs_write_deadbands() -> None:
    base = {"supplyTempC": 30.0, "flowLitersPerMinute": 300.0, "itLoadKW": 50.0}
    now = T0
    assert not needs_write(base, base | {"supplyTempC": 30.4}, now=now, stale_after=60)
    assert needs_write(base, base | {"supplyTempC": 30.5}, now=now, stale_after=60)
    assert not needs_write(base, base | {"flowLitersPerMinute": 302.9}, now=now, stale_after=60)
    assert needs_write(base, base | {"flowLitersPerMinute": 303.0}, now=now, stale_after=60)
    assert needs_write(base, base | {"itLoadKW": None}, now=now, stale_after=60)
    assert needs_write(base, base | {"leakState": "OK"}, now=now, stale_after=60)


def test_count_tank_nodes_and_replicas() -> None:
    from tokenfleet.controllers.fleet import FleetView
    from tokenfleet.controllers.immersionpod import count_tank
    from tokenfleet.controllers.nodes import ServingReplica
    from tokenfleet.controllers.settings import OperatorConfig
    from tokenfleet.telemetry.node import parse_node

    def rack(name: str, tank: str, deleting: bool = False) -> Any:
        meta: dict[str, Any] = {
            "name": name,
            "labels": {"tokenfleet.io/role": "rack", "tokenfleet.io/tank": tank},
        }
        if deleting:
            meta["deletionTimestamp"] = "2026-11-25T12:00:00Z"
        return parse_node({"metadata": meta, "status": {"allocatable": {"memory": "1Gi"}}})

    infos = [
        rack("r1", "tank-a"),
        rack("r2", "tank-a"),
        rack("r3", "tank-b"),
        rack("r4", "tank-a", True),
    ]
    serving = {
        "r1": [ServingReplica("ns/a", 2, 10.0), ServingReplica("ns/b", 1, 5.0)],
        "r3": [ServingReplica("ns/a", 1, 5.0)],
        "r4": [ServingReplica("ns/a", 1, 5.0)],
    }
    spec = {"nodeSelector": {"tokenfleet.io/tank": "tank-a"}}
    fleet = FleetView(OperatorConfig())
    fleet.node_store.replace(infos)
    indexes = {"serving_by_node": serving}
    fleet.attach(indexes, partial=True)
    assert count_tank(spec, fleet) == (2, 3)
    fleet.attach({**indexes, "serving_by_node": {}}, partial=True)
    assert count_tank(spec, fleet) == (2, 0)


async def test_replicas_written(sim: TankSimulator) -> None:
    h = Harness(sim)
    patch = await h.poller.tick(spec=h.spec, status={}, generation=1, nodes=3, replicas=4)
    assert patch is not None and patch["replicas"] == 4 and patch["nodes"] == 3


# ---- leak latch ---------------------------------------------------------------------------------


def _reading(state: LeakState, *detectors: tuple[str, Health | None]) -> TankReading:
    return TankReading(
        unit_id="tank-a",
        observed_at=T0,
        leak_state=state,
        leak_detectors=tuple(LeakDetector(n, s) for n, s in detectors),
    )


def test_next_latch_sets_raises_and_never_lowers() -> None:
    ok = _reading(LeakState.OK, ("M1", Health.OK))
    warning = _reading(LeakState.WARNING, ("M1", Health.WARNING))
    critical = _reading(LeakState.CRITICAL, ("M1", Health.WARNING), ("F1", Health.CRITICAL))
    unknown = _reading(LeakState.UNKNOWN, ("M1", None))
    later = T0 + timedelta(minutes=5)
    on_critical, on_warning = LeakSeverity.CRITICAL, LeakSeverity.WARNING
    assert next_latch(None, ok, latch_on=on_critical, now=T0) is None
    assert next_latch(None, None, latch_on=on_critical, now=T0) is None
    assert next_latch(None, warning, latch_on=on_critical, now=T0) is None
    latch = next_latch(None, critical, latch_on=on_critical, now=T0)
    assert latch == {
        "state": "Critical",
        "latchedAt": "2026-11-25T12:00:00Z",
        "message": "detectors: M1=Warning, F1=Critical",
    }
    for reading in (ok, warning, unknown, critical, None):
        assert next_latch(latch, reading, latch_on=on_critical, now=later) == latch
    held = next_latch(None, warning, latch_on=on_warning, now=T0)
    assert held is not None and held["state"] == "Warning"
    raised = next_latch(held, critical, latch_on=on_warning, now=later)
    assert raised == {**latch, "latchedAt": "2026-11-25T12:00:00Z"}  # latchedAt kept
    assert next_latch(raised, warning, latch_on=on_warning, now=later) == raised


def test_acknowledgement_refusal() -> None:
    ok = _reading(LeakState.OK, ("M1", Health.OK))
    assert acknowledgement_refusal(PollOutcome(ok, None, T0)) is None
    refusal = acknowledgement_refusal(PollOutcome(ok, "HTTP 500", T0))
    assert refusal is not None and "could not be read: HTTP 500" in refusal
    assert acknowledgement_refusal(PollOutcome(None, None, T0)) == "the tank has not been read yet"
    wet = _reading(LeakState.CRITICAL, ("M1", Health.OK), ("F1", Health.CRITICAL))
    assert acknowledgement_refusal(PollOutcome(wet, None, T0)) == (
        "leak detectors still read Critical (detectors: F1=Critical)"
    )
    blind = _reading(LeakState.UNKNOWN, ("M1", Health.OK), ("F1", None))
    assert acknowledgement_refusal(PollOutcome(blind, None, T0)) == (
        "leak detectors could not be read: F1"
    )


async def test_critical_latches_until_acknowledged_with_the_detectors_ok(
    sim: TankSimulator,
) -> None:
    h = Harness(sim)
    await h.tick()
    sim.set_leak("tank-a", "FloatSwitch1", "Critical")
    await h.tick(15.0)
    latch = h.status["leakLatch"]
    assert latch == {
        "state": "Critical",
        "latchedAt": "2026-11-25T12:00:15Z",
        "message": "detectors: FloatSwitch1=Critical",
    }
    assert [r for r, _ in h.events[-2:]] == ["LeakDetected", "LeakLatched"]
    assert TANK_LEAK_LATCHED.labels("tank-a")._value.get() == 1

    # the sensor dries: the tank stays cordoned, and says how to clear it
    sim.set_leak("tank-a", "FloatSwitch1", "OK")
    await h.tick(15.0)
    assert h.status["leakState"] == "OK" and h.status["leakLatch"] == latch
    assert h.condition("LeakDetected") == ("False", "NoLeak")
    assert h.condition("Cordoned") == ("True", "LeakLatched")
    assert h.condition("Ready") == ("False", "LeakLatched")
    message = get_condition(h.status["conditions"], "Cordoned")["message"]  # type: ignore[index]
    assert "latched at 2026-11-25T12:00:15Z" in message and "replicas are drained" in message
    assert "kubectl annotate immersionpod tank-a tokenfleet.io/leak-acknowledged=" in message

    # acknowledged while a detector reads Critical again: refused, latch kept
    sim.set_leak("tank-a", "Moisture1", "Critical")
    polls = sim.tanks["tank-a"].requests
    await h.tick(1.0, ack="alice: looks dry", version="10")
    assert sim.tanks["tank-a"].requests > polls  # judged on a fresh reading, not due yet
    assert h.status["leakLatch"] == latch
    reason, text = h.events[-1]
    assert reason == "LeakAcknowledgementRefused"
    assert "'alice: looks dry' refused" in text and "still read Critical" in text
    assert h.infos == []
    # the same annotation (same resourceVersion) seen again is not judged again
    events = len(h.events)
    await h.tick(1.0, ack="alice: looks dry", version="10")
    assert len(h.events) == events

    # acknowledged with every detector OK: cleared, Normal event with the note
    sim.set_leak("tank-a", "Moisture1", "OK")
    patch = await h.tick(1.0, ack="alice: tank inspected, dry", version="12")
    assert patch is not None and patch["leakLatch"] is None
    assert "leakLatch" not in h.status
    assert h.infos == [
        (
            "LeakLatchCleared",
            "leak Critical latched at 2026-11-25T12:00:15Z cleared by acknowledgement "
            "'alice: tank inspected, dry'; every leak detector reads OK",
        )
    ]
    assert h.condition("Cordoned") == ("False", "NotCordoned")
    assert h.condition("Ready") == ("True", "Accepting")
    assert TANK_LEAK_LATCHED.labels("tank-a")._value.get() == 0
    assert TANK_LEAK_ACKNOWLEDGEMENTS.labels("tank-a", "cleared")._value.get() >= 1

    # the next leak latches again
    sim.set_leak("tank-a", "Moisture1", "Critical")
    await h.tick(15.0)
    assert h.status["leakLatch"]["latchedAt"] == "2026-11-25T12:00:48Z"


async def test_acknowledgement_refused_while_unreadable_and_without_a_latch(
    sim: TankSimulator,
) -> None:
    h = Harness(sim)
    await h.tick()
    await h.tick(1.0, ack="nothing to see", version="3")
    assert h.infos[-1][0] == "LeakAcknowledged" and "no leak is latched" in h.infos[-1][1]
    assert "leakLatch" not in h.status
    sim.set_leak("tank-a", "FloatSwitch1", "Critical")
    await h.tick(15.0)
    sim.set_leak("tank-a", "FloatSwitch1", "OK")
    sim.set("tank-a", http_status=500)
    await h.tick(1.0, ack="bob", version="5")
    assert h.events[-1][0] == "LeakAcknowledgementRefused"
    assert "could not be read" in h.events[-1][1]
    sim.set("tank-a", http_status=200, missing=["LeakDetectors"])
    await h.tick(1.0, ack="bob", version="6")
    assert h.events[-1][0] == "LeakAcknowledgementRefused"
    assert "leak detectors could not be read" in h.events[-1][1]
    assert h.status["leakLatch"]["state"] == "Critical"
    assert h.condition("Cordoned") == ("True", "LeakLatched")


async def test_latch_survives_a_restart_and_ignores_stale_bodies(sim: TankSimulator) -> None:
    h = Harness(sim)
    await h.tick()
    sim.set_leak("tank-a", "FloatSwitch1", "Critical")
    await h.tick(15.0)
    sim.set_leak("tank-a", "FloatSwitch1", "OK")
    latched = dict(h.status)
    # a restarted operator: a new poller, the detectors OK, the latch only in status
    h2 = Harness(sim)
    h2.now, h2.mono, h2.status = h.now, h.mono, dict(latched)
    await h2.tick(15.0)
    assert h2.status["leakLatch"] == latched["leakLatch"]
    assert h2.condition("Cordoned") == ("True", "LeakLatched")
    assert not [e for e in h2.events if e[0] == "LeakLatched"]  # not latched anew
    # cleared; then a watch event that still carries the old latch must not bring it back
    await h2.tick(1.0, ack="carol", version="20")
    assert "leakLatch" not in h2.status
    h2.status = dict(latched)
    patch = await h2.tick(15.0)
    assert patch is not None and patch["leakLatch"] is None
    assert h2.condition("Cordoned") == ("False", "NotCordoned")


async def test_latch_on_warning_cordons_without_draining(sim: TankSimulator) -> None:
    h = Harness(sim, leakPolicy={"action": "Drain", "latchOn": "Warning"})
    await h.tick()
    sim.set_leak("tank-a", "Moisture1", "Warning")
    await h.tick(15.0)
    assert h.status["leakLatch"]["state"] == "Warning"
    sim.set_leak("tank-a", "Moisture1", "OK")
    await h.tick(15.0)
    message = get_condition(h.status["conditions"], "Cordoned")["message"]  # type: ignore[index]
    assert h.condition("Cordoned") == ("True", "LeakLatched")
    assert "replicas stay (a Warning latch does not drain)" in message
    sim.set_leak("tank-a", "FloatSwitch1", "Critical")
    await h.tick(15.0)
    sim.set_leak("tank-a", "FloatSwitch1", "OK")
    await h.tick(15.0)
    assert h.status["leakLatch"]["state"] == "Critical"
    assert h.status["leakLatch"]["latchedAt"] == "2026-11-25T12:00:15Z"
    message = get_condition(h.status["conditions"], "Cordoned")["message"]  # type: ignore[index]
    assert "replicas are drained" in message


async def test_acknowledgement_on_an_invalid_spec_is_left_for_later(sim: TankSimulator) -> None:
    h = Harness(sim)
    await h.tick()
    h.spec["power"] = {"capacityKW": -1}
    await h.tick(1.0, ack="dave", version="7")
    assert h.poller.handled_ack is None  # the timer leaves the annotation in place
    h.spec["power"] = {"capacityKW": 180}
    await h.tick(1.0, ack="dave", version="7")
    assert h.poller.handled_ack == ("dave", "7")  # now handled: the timer removes it
    assert h.infos[-1][0] == "LeakAcknowledged"


async def test_tank_with_credentials_secret_reads_them_on_every_poll(sim: TankSimulator) -> None:
    """Basic auth, then a rotated password: the poller asks for the Secret on each poll, so a
    rotation is used from the next poll on; a missing Secret is named in the condition."""
    from tokenfleet.telemetry.immersion import RedfishCredentials, RedfishError

    sim.set("tank-a", username="op", password="one")
    secret: dict[str, str | None] = {"password": "one"}
    asked: list[tuple[str, bool]] = []

    async def load(name: str, session: bool) -> RedfishCredentials:
        asked.append((name, session))
        if secret["password"] is None:
            raise RedfishError(f"credentials Secret tokenfleet-system/{name} not found")
        return RedfishCredentials(username="op", password=secret["password"], session=session)

    redfish = {
        "endpoint": sim.url,
        "unitId": "tank-a",
        "timeoutSeconds": 1,
        "credentialsSecretName": "tank-a-bmc",
    }
    telemetry = {"source": "Redfish", "redfish": redfish, "pollIntervalSeconds": 15}
    h = Harness(sim, telemetry={**telemetry, "staleAfterSeconds": 60})
    h.poller.credentials = load
    await h.tick()
    assert h.condition("Ready") == ("True", "Accepting")
    assert asked == [("tank-a-bmc", False)]

    sim.set("tank-a", password="two")  # rotated on the BMC first: 401 until the Secret follows
    await h.tick(15)
    assert any("HTTP 401" in m for r, m in h.events if r == "TelemetryUnreachable")
    secret["password"] = "two"
    await h.tick(15)
    assert h.poller.outcome.error is None
    assert h.condition("Ready") == ("True", "Accepting")

    secret["password"] = None
    await h.tick(61)
    assert h.condition("TelemetryFresh")[1] == "TelemetryUnreachable"
    fresh = get_condition(h.status["conditions"], "TelemetryFresh")
    assert fresh is not None and "tokenfleet-system/tank-a-bmc not found" in fresh["message"]


async def test_session_auth_keeps_one_session_across_polls(sim: TankSimulator) -> None:
    from tokenfleet.telemetry.immersion import RedfishCredentials

    sim.set("tank-a", username="op", password="pw")

    async def load(name: str, session: bool) -> RedfishCredentials:
        return RedfishCredentials(username="op", password="pw", session=session)

    redfish = {
        "endpoint": sim.url,
        "unitId": "tank-a",
        "credentialsSecretName": "bmc",
        "authMethod": "Session",
    }
    h = Harness(
        sim,
        telemetry={
            "source": "Redfish",
            "redfish": redfish,
            "pollIntervalSeconds": 15,
            "staleAfterSeconds": 60,
        },
    )
    h.poller.credentials = load
    for _ in range(4):
        await h.tick(15)
    assert h.condition("Ready") == ("True", "Accepting")
    assert sim.session_logins == 1 and sim.unauthorized == 0


async def test_tank_naming_a_secret_without_a_reader_is_unreachable(sim: TankSimulator) -> None:
    redfish = {"endpoint": sim.url, "unitId": "tank-a", "credentialsSecretName": "bmc"}
    h = Harness(
        sim,
        telemetry={
            "source": "Redfish",
            "redfish": redfish,
            "pollIntervalSeconds": 15,
            "staleAfterSeconds": 60,
        },
    )
    await h.tick()
    assert h.condition("Ready")[0] == "False"
    assert any("no Secret reader" in m for _, m in h.events)
