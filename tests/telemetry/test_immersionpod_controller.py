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
from tokenfleet.controllers.immersionpod import TankPoller, needs_write
from tokenfleet.telemetry.metrics import TELEMETRY_REJECTED

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
        self.spec = tank_spec(sim.url, **spec_overrides)
        self.status: dict[str, Any] = {}
        self.writes: list[dict[str, Any]] = []
        self.poller = TankPoller(
            name="tank-a",
            warn=lambda reason, message: self.events.append((reason, message)),
            clock=lambda: self.now,
            monotonic=lambda: self.mono,
        )

    async def tick(self, advance: float = 0.0, generation: int = 1) -> dict[str, Any] | None:
        self.now += timedelta(seconds=advance)
        self.mono += advance
        patch = await self.poller.tick(
            spec=self.spec, status=self.status, generation=generation, nodes=3
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


async def test_last_reading_time_refreshed_before_it_looks_stale(sim: TankSimulator) -> None:
    h = Harness(sim)
    await h.tick()
    assert await h.tick(15.0) is None  # 15 s < 60/3
    assert await h.tick(15.0) is not None  # 30 s >= 20 s: refresh
    assert h.status["lastReadingTime"] == "2026-11-25T12:00:30Z"


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


async def test_leak_cordons_and_recovers(sim: TankSimulator) -> None:
    h = Harness(sim)
    await h.tick()
    sim.set_leak("tank-a", "Moisture1", "Warning")
    assert await h.tick(15.0) is not None
    assert h.status["leakState"] == "Warning"
    assert h.condition("LeakDetected") == ("True", "LeakWarning")
    assert h.condition("Cordoned") == ("True", "LeakDetected")
    assert h.condition("Ready") == ("False", "LeakDetected")
    assert h.events[-1][0] == "LeakDetected" and "Moisture1=Warning" in h.events[-1][1]
    sim.set_leak("tank-a", "FloatSwitch1", "Critical")
    await h.tick(15.0)
    assert h.status["leakState"] == "Critical"
    assert "replicas are drained" in get_condition(h.status["conditions"], "Cordoned")["message"]  # type: ignore[index]
    sim.set("tank-a", leak={"Moisture1": "OK", "FloatSwitch1": "OK"})
    await h.tick(15.0)
    assert h.status["leakState"] == "OK"
    assert h.condition("Cordoned") == ("False", "NotCordoned")
    assert h.condition("Ready") == ("True", "Accepting")


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
    from tokenfleet.controllers.immersionpod import count_tank
    from tokenfleet.controllers.nodes import ServingReplica
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
    by_name = {i.name: [i] for i in infos}
    serving = {
        "r1": [ServingReplica("ns/a", 2, 10.0), ServingReplica("ns/b", 1, 5.0)],
        "r3": [ServingReplica("ns/a", 1, 5.0)],
        "r4": [ServingReplica("ns/a", 1, 5.0)],
    }
    spec = {"nodeSelector": {"tokenfleet.io/tank": "tank-a"}}
    assert count_tank(spec, {"nodes_by_name": by_name, "serving_by_node": serving}) == (2, 3)
    assert count_tank(spec, {"nodes_by_name": by_name}) == (2, None)
    assert count_tank(spec, {}) == (None, None)


async def test_replicas_written(sim: TankSimulator) -> None:
    h = Harness(sim)
    patch = await h.poller.tick(spec=h.spec, status={}, generation=1, nodes=3, replicas=4)
    assert patch is not None and patch["replicas"] == 4 and patch["nodes"] == 3
