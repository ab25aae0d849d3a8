"""An ImmersionPod's status from its latest reading (pure): one small function per condition.

:func:`desired_status` composes the measured fields (:func:`measured_status`), the four
conditions — :func:`telemetry_fresh`, :func:`leak_detected`, :func:`cordoned`, :func:`ready` —
and the leak latch (:func:`next_latch`). The poller in :mod:`tokenfleet.controllers.tankpoller`
does the I/O and decides when to write.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import EllipsisType
from typing import Any, Final, NamedTuple

from tokenfleet.api.conditions import STALLED, remove_condition, rfc3339, set_condition
from tokenfleet.api.models import ImmersionPodSpec, LeakAction, LeakSeverity
from tokenfleet.telemetry.immersion import LeakState, TankReading, compute_headroom
from tokenfleet.telemetry.vehicle import parse_time

CONDITION_TELEMETRY_FRESH: Final = "TelemetryFresh"
CONDITION_LEAK: Final = "LeakDetected"
CONDITION_CORDONED: Final = "Cordoned"
CONDITION_READY: Final = "Ready"
ACK_ANNOTATION: Final = "tokenfleet.io/leak-acknowledged"
"""Annotation a person sets to clear a latched leak (its value, a note, goes into the Event)."""


MEASURED: Final = (
    "itLoadKW",
    "powerHeadroomKW",
    "thermalHeadroomKW",
    "supplyTempC",
    "returnTempC",
    "flowLitersPerMinute",
)
"""The measured status fields (kept, with their ``lastReadingTime``, across failed polls)."""

_SEVERITY: Final = {
    LeakState.OK: 0,
    LeakState.UNKNOWN: 1,
    LeakState.WARNING: 2,
    LeakState.CRITICAL: 3,
}


def clear_command(name: str | None) -> str:
    """The one kubectl command that acknowledges (clears) a latched leak."""
    return f"kubectl annotate immersionpod {name or '<name>'} {ACK_ANNOTATION}='<who/what>'"


def _latches(state: LeakState, latch_on: LeakSeverity) -> bool:
    return _SEVERITY[state] >= _SEVERITY[LeakState(latch_on.value)]


def next_latch(
    latch: Mapping[str, Any] | None,
    reading: TankReading | None,
    *,
    latch_on: LeakSeverity,
    now: datetime,
) -> dict[str, Any] | None:
    """The ``status.leakLatch`` after ``reading`` (pure). A reading at or above ``latch_on`` sets
    it (``latchedAt`` = ``now``) or raises its ``state``; nothing else ever lowers or removes it
    (only an accepted acknowledgement does, by passing ``latch=None``)."""
    current = dict(latch) if isinstance(latch, Mapping) and latch.get("state") else None
    if reading is None or not _latches(reading.leak_state, latch_on):
        return current
    state = reading.leak_state
    if current is None:
        return {
            "state": state.value,
            "latchedAt": rfc3339(now),
            "message": leak_message(reading)[:1024],
        }
    held = LeakState(current["state"]) if current["state"] in _SEVERITY else LeakState.CRITICAL
    if _SEVERITY[state] > _SEVERITY[held]:
        current["state"] = state.value
        current["message"] = leak_message(reading)[:1024]
    return current


def leak_message(reading: TankReading | None) -> str:
    if reading is None:
        return "leak reported"
    wet = [f"{d.name}={d.state.value}" for d in reading.leak_detectors if d.state is not None]
    return "detectors: " + ", ".join(w for w in wet if not w.endswith("=OK"))


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 2)


@dataclass
class PollOutcome:
    """What the last poll produced (kept between ticks)."""

    reading: TankReading | None = None
    """The last successful reading (kept across failed polls)."""
    error: str | None = None
    """The last poll's error, ``None`` when it succeeded."""
    polled_at: datetime | None = None


class ConditionValue(NamedTuple):
    """A condition's status, reason and message."""

    status: str
    reason: str
    message: str


def measured_status(
    spec: ImmersionPodSpec, reading: TankReading | None, current: Mapping[str, Any]
) -> tuple[dict[str, Any], datetime | None]:
    """(the measured fields, the time of the reading they come from). Without a successful
    reading the stored values stay, judged by their stored ``lastReadingTime``."""
    if reading is None:
        return _kept_measurements(current)
    head = compute_headroom(
        reading,
        capacity_kw=spec.power.capacity_kw,
        safety_margin_percent=spec.power.safety_margin_percent,
        heat_rejection_kw=spec.coolant.heat_rejection_kw,
        max_return_temp_c=spec.coolant.max_return_temp_c,
        density_kg_per_l=spec.coolant.density_kg_per_liter,
        specific_heat_kj_per_kg_k=spec.coolant.specific_heat_kj_per_kg_k,
    )
    fields = {
        "itLoadKW": _round(head.it_load_kw),
        "powerHeadroomKW": _round(head.power_headroom_kw),
        "thermalHeadroomKW": _round(head.thermal_headroom_kw),
        "supplyTempC": _round(reading.supply_temp_c),
        "returnTempC": _round(reading.return_temp_c),
        "flowLitersPerMinute": _round(reading.flow_lpm),
        "leakState": reading.leak_state.value,
        "lastReadingTime": rfc3339(reading.observed_at),
    }
    return fields, reading.observed_at


def _kept_measurements(current: Mapping[str, Any]) -> tuple[dict[str, Any], datetime | None]:
    fields = {k: current[k] for k in (*MEASURED, "leakState", "lastReadingTime") if k in current}
    raw_time = current.get("lastReadingTime")
    last_reading = parse_time(raw_time) if isinstance(raw_time, str) else None
    if last_reading is None:
        fields["leakState"] = LeakState.UNKNOWN.value
    return fields, last_reading


def telemetry_fresh(outcome: PollOutcome, age: float | None, stale_after: float) -> ConditionValue:
    """``TelemetryFresh``: the latest reading (``age`` seconds old) is within ``stale_after``."""
    if outcome.polled_at is None and age is None:
        return ConditionValue("Unknown", "AwaitingFirstPoll", "no reading yet")
    if age is not None and age <= stale_after:
        return _fresh(outcome)
    if outcome.error is not None:
        return ConditionValue("False", "TelemetryUnreachable", outcome.error[:1000])
    if age is None:
        return ConditionValue("False", "NoReading", "no successful reading")
    return ConditionValue("False", "TelemetryStale", f"no reading within {int(stale_after)}s")


def _fresh(outcome: PollOutcome) -> ConditionValue:
    problems = outcome.reading.problems if outcome.reading is not None else ()
    message = (
        "all fields valid"
        if not problems
        else "rejected: " + "; ".join(p.describe() for p in problems)[:1000]
    )
    if outcome.error is not None:
        message += f"; last poll failed: {outcome.error[:500]}"
    return ConditionValue("True", "ReadingFresh" if not problems else "PartialReading", message)


def leak_detected(leak: LeakState, reading: TankReading | None) -> ConditionValue:
    """``LeakDetected``: what the detectors read now."""
    if leak.is_leak:
        return ConditionValue("True", f"Leak{leak.value}", leak_message(reading))
    if leak is LeakState.OK:
        return ConditionValue("False", "NoLeak", "all leak detectors OK")
    return ConditionValue("Unknown", "LeakDetectorsUnreadable", "leak detectors could not be read")


def effective_leak(leak: LeakState, latch: Mapping[str, Any] | None) -> LeakState:
    """What the placement engine acts on: the worse of the live and the latched state."""
    latched = LeakState(latch["state"]) if latch is not None else None
    return latched if latched is not None and _SEVERITY[latched] > _SEVERITY[leak] else leak


def cordoned(
    spec: ImmersionPodSpec, leak: LeakState, latch: Mapping[str, Any] | None, name: str | None
) -> ConditionValue:
    """``Cordoned``: no new placements (a leak now, a latched leak, or ``spec.cordoned``)."""
    clear = f"after inspecting the tank, clear it: {clear_command(name)}"
    action = spec.leak_policy.action
    if leak.is_leak:
        message = f"leak {leak.value}: no new placements" + (
            "; replicas are drained" if action is LeakAction.DRAIN else "; replicas stay (Cordon)"
        )
        if latch is not None:
            message += f"; latched: once every detector reads OK, {clear}"
        return ConditionValue("True", "LeakDetected", message)
    if latch is not None:
        return ConditionValue("True", "LeakLatched", _latched_message(spec, leak, latch, clear))
    if spec.cordoned:
        return ConditionValue("True", "SpecCordoned", "spec.cordoned is true: no new placements")
    return ConditionValue("False", "NotCordoned", "")


def _latched_message(
    spec: ImmersionPodSpec, leak: LeakState, latch: Mapping[str, Any], clear: str
) -> str:
    action = spec.leak_policy.action
    if action is LeakAction.DRAIN and effective_leak(leak, latch) is LeakState.CRITICAL:
        consequence = "; replicas are drained"
    elif action is LeakAction.CORDON:
        consequence = "; replicas stay (Cordon)"
    else:
        consequence = "; replicas stay (a Warning latch does not drain)"
    note = f" ({latch.get('message')})" if latch.get("message") else ""
    return (
        f"leak {latch['state']} latched at {latch['latchedAt']}{note}"
        f", detectors now {leak.value}: no new placements{consequence}; {clear}"
    )


def ready(
    *,
    spec: ImmersionPodSpec,
    leak: LeakState,
    latch: Mapping[str, Any] | None,
    fresh: ConditionValue,
    leak_condition: ConditionValue,
    cordon: ConditionValue,
    headroom_known: bool,
) -> ConditionValue:
    """``Ready``: the tank accepts new placements (the first reason it does not, else True)."""
    if leak.is_leak:
        return ConditionValue("False", "LeakDetected", cordon.message)
    if latch is not None:
        return ConditionValue("False", "LeakLatched", cordon.message)
    if spec.cordoned:
        return ConditionValue("False", "Cordoned", cordon.message)
    if fresh.status != "True":
        return ConditionValue("False", fresh.reason, fresh.message)
    if leak is not LeakState.OK:
        return ConditionValue("False", "LeakDetectorsUnreadable", leak_condition.message)
    if not headroom_known:
        return ConditionValue(
            "False", "HeadroomUnknown", "power or thermal headroom cannot be computed"
        )
    return ConditionValue("True", "Accepting", "telemetry fresh, no leak, headroom known")


def desired_status(
    *,
    spec: ImmersionPodSpec,
    generation: int | None,
    current: Mapping[str, Any],
    outcome: PollOutcome,
    now: datetime,
    nodes: int | None,
    replicas: int | None = None,
    latch: Mapping[str, Any] | EllipsisType | None = ...,
    name: str | None = None,
) -> dict[str, Any]:
    """The status this tank should have now (pure). ``None`` values delete fields.

    Measured fields come from the latest *successful* reading; on a failed poll the previous
    values (and their ``lastReadingTime``) are kept, so consumers judge them by age. ``latch`` is
    the leak latch before this reading (default: ``current["leakLatch"]``; ``None`` after an
    accepted acknowledgement); :func:`next_latch` applies the reading to it.
    """
    reading = outcome.reading
    before = current.get("leakLatch") if isinstance(latch, EllipsisType) else latch
    leak_latch = next_latch(
        before if isinstance(before, Mapping) else None,
        reading,
        latch_on=spec.leak_policy.latch_on,
        now=now,
    )
    measured, last_reading = measured_status(spec, reading, current)
    status: dict[str, Any] = {"observedGeneration": generation, "leakLatch": leak_latch}
    status.update(measured)
    age = None if last_reading is None else max(0.0, (now - last_reading).total_seconds())
    status["telemetryAgeSeconds"] = None if age is None else int(age)
    if nodes is not None:
        status["nodes"] = nodes
    if replicas is not None:
        status["replicas"] = replicas

    leak = LeakState(status.get("leakState", LeakState.UNKNOWN.value))
    fresh = telemetry_fresh(outcome, age, float(spec.telemetry.stale_after_seconds))
    leak_condition = leak_detected(leak, reading)
    cordon = cordoned(spec, leak, leak_latch, name)
    readiness = ready(
        spec=spec,
        leak=leak,
        latch=leak_latch,
        fresh=fresh,
        leak_condition=leak_condition,
        cordon=cordon,
        headroom_known=status.get("powerHeadroomKW") is not None
        and status.get("thermalHeadroomKW") is not None,
    )
    conditions: Iterable[Mapping[str, Any]] | None = current.get("conditions")
    for type_, value in (
        (CONDITION_READY, readiness),
        (CONDITION_TELEMETRY_FRESH, fresh),
        (CONDITION_LEAK, leak_condition),
        (CONDITION_CORDONED, cordon),
    ):
        conditions = set_condition(
            conditions, type_, *value, observed_generation=generation, now=now
        )
    # a valid spec is not stalled (InvalidSpec / an unsupported source set it)
    status["conditions"] = remove_condition(conditions, STALLED)
    return status
