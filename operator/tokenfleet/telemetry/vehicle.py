"""The vehicle telemetry contract (DESIGN.md "Telemetry contract"): Node labels + annotations.

A vehicle's node agent writes ``telemetry.tokenfleet.io/*`` annotations on its own Node (plain
decimal strings, RFC 3339 times). :func:`parse_vehicle_reading` turns a Node's labels and
annotations into a frozen :class:`VehicleReading` whose every field is either a valid value or
``None`` (unknown), plus the :class:`~tokenfleet.telemetry.problems.TelemetryProblem` list saying
why. Parsing is pure and time-free; staleness depends on the pool's ``staleAfterSeconds`` and on
*now*, so it is applied separately with :meth:`VehicleReading.at` at the moment of use (a reading
stored in an index must be re-judged every time it is read).

Trust: region and attestation come only from the ``node-restriction.kubernetes.io/`` labels, which
a kubelet cannot set on itself; the annotations are the car's claims.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TypeVar

from tokenfleet.telemetry.problems import (
    ProblemKind,
    TelemetryProblem,
    check_range,
    raw_text,
)

__all__ = [
    "ANNOTATION_PREFIX",
    "ATTESTED_LABEL",
    "BANDWIDTH_RANGE",
    "CHARGER_KW_RANGE",
    "MAX_FUTURE_SKEW_SECONDS",
    "POOL_LABEL",
    "REGION_LABEL",
    "ROLE_LABEL",
    "SIGNAL_ANNOTATIONS",
    "SOC_RANGE",
    "TEMP_C_RANGE",
    "VehicleReading",
    "format_time",
    "parse_time",
    "parse_vehicle_reading",
]

ANNOTATION_PREFIX: Final = "telemetry.tokenfleet.io/"
ROLE_LABEL: Final = "tokenfleet.io/role"
POOL_LABEL: Final = "tokenfleet.io/pool"
TANK_LABEL: Final = "tokenfleet.io/tank"
ACCELERATOR_LABEL: Final = "tokenfleet.io/accelerator"
REGION_LABEL: Final = "node-restriction.kubernetes.io/tokenfleet-region"
ATTESTED_LABEL: Final = "node-restriction.kubernetes.io/tokenfleet-attested"
RUNTIME_ENDPOINT_ANNOTATION: Final = "tokenfleet.io/runtime-endpoint"
BASELINE_WATTS_ANNOTATION: Final = "tokenfleet.io/baseline-watts"

# Annotation suffixes (after ANNOTATION_PREFIX), the public contract.
SOC: Final = "soc-percent"
PLUGGED_IN: Final = "plugged-in"
CHARGER_POWER: Final = "charger-power-kw"
BATTERY_TEMP: Final = "battery-temp-c"
COMPUTE_TEMP: Final = "compute-temp-c"
DEPARTURE: Final = "departure-time"
TARGET_SOC: Final = "target-soc-percent"
BANDWIDTH: Final = "bandwidth-mbps"
OBSERVED_AT: Final = "observed-at"

SIGNAL_ANNOTATIONS: Final[Mapping[str, str]] = {
    # VehicleReading attribute -> annotation suffix
    "soc_percent": SOC,
    "plugged_in": PLUGGED_IN,
    "charger_power_kw": CHARGER_POWER,
    "battery_temp_c": BATTERY_TEMP,
    "compute_temp_c": COMPUTE_TEMP,
    "departure_time": DEPARTURE,
    "target_soc_percent": TARGET_SOC,
    "bandwidth_mbps": BANDWIDTH,
    "observed_at": OBSERVED_AT,
}

_T = TypeVar("_T")

# Physical ranges (inclusive).
SOC_RANGE: Final = (0.0, 100.0)
TEMP_C_RANGE: Final = (-40.0, 150.0)
CHARGER_KW_RANGE: Final = (0.0, 400.0)
BANDWIDTH_RANGE: Final = (0.0, 100_000.0)
MAX_FUTURE_SKEW_SECONDS: Final = 30.0
"""An ``observed-at`` further than this in the future is rejected (clock skew allowance)."""

# Attributes that are telemetry (blanked when the reading is stale). Labels are not telemetry.
_TELEMETRY_ATTRS: Final = (
    "soc_percent",
    "plugged_in",
    "charger_power_kw",
    "battery_temp_c",
    "compute_temp_c",
    "departure_time",
    "target_soc_percent",
    "bandwidth_mbps",
)


def parse_time(value: str) -> datetime | None:
    """Parse an RFC 3339 timestamp with an explicit offset (``Z`` or ``±hh:mm``) to aware UTC.

    Returns ``None`` for anything else (naive times, dates, garbage)."""
    text = value.strip()
    if len(text) < 20 or text[10] not in "Tt ":
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return None
    return parsed.astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix and whole seconds (the form the agent writes)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: telemetry times must be timezone-aware")
    return value.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class VehicleReading:
    """One vehicle's telemetry, each field valid or ``None`` (unknown).

    ``problems`` lists every rejected field. ``stale`` is set only by :meth:`at` (then all
    telemetry fields are ``None``). ``pool``/``region``/``attested`` come from labels.
    """

    soc_percent: float | None = None
    plugged_in: bool | None = None
    charger_power_kw: float | None = None
    battery_temp_c: float | None = None
    compute_temp_c: float | None = None
    departure_time: datetime | None = None
    target_soc_percent: float | None = None
    bandwidth_mbps: float | None = None
    observed_at: datetime | None = None
    pool: str | None = None
    region: str | None = None
    attested: bool = False
    problems: tuple[TelemetryProblem, ...] = ()
    stale: bool = False

    def age_seconds(self, now: datetime) -> float | None:
        """Seconds since ``observed_at`` (negative if in the future); ``None`` if unknown."""
        if self.observed_at is None:
            return None
        return (now - self.observed_at).total_seconds()

    def at(
        self,
        now: datetime,
        stale_after_seconds: float,
        *,
        max_future_skew_seconds: float = MAX_FUTURE_SKEW_SECONDS,
    ) -> VehicleReading:
        """The reading as it counts at ``now`` under a staleness limit.

        Stale (all telemetry fields ``None``, ``stale=True``, a ``Stale`` problem on
        ``observed-at``) when ``observed_at`` is unknown or older than ``stale_after_seconds``;
        a time more than ``max_future_skew_seconds`` ahead is ``OutOfRange`` and also stale
        (an age that cannot be trusted is unknown, never good). Idempotent.
        """
        age = self.age_seconds(now)
        problem: TelemetryProblem | None = None
        raw = None if self.observed_at is None else format_time(self.observed_at)
        if age is None:
            problem = TelemetryProblem(OBSERVED_AT, None, ProblemKind.STALE)
        elif age < -max_future_skew_seconds:
            problem = TelemetryProblem(OBSERVED_AT, raw, ProblemKind.OUT_OF_RANGE)
        elif not math.isfinite(stale_after_seconds) or age > stale_after_seconds:
            problem = TelemetryProblem(OBSERVED_AT, raw, ProblemKind.STALE)
        if problem is None:
            return self
        problems = self.problems if problem in self.problems else (*self.problems, problem)
        blank: dict[str, object] = dict.fromkeys(_TELEMETRY_ATTRS)
        return dataclasses.replace(self, stale=True, problems=problems, **blank)  # type: ignore[arg-type]

    def is_fresh(self, now: datetime, stale_after_seconds: float) -> bool:
        """True when :meth:`at` would not mark the reading stale."""
        return not self.at(now, stale_after_seconds).stale


def _bool(field: str, value: str | None) -> tuple[bool | None, TelemetryProblem | None]:
    if value is None or value.strip() == "":
        return None, TelemetryProblem(field, raw_text(value), ProblemKind.MISSING)
    text = value.strip().lower()
    if text == "true":
        return True, None
    if text == "false":
        return False, None
    return None, TelemetryProblem(field, raw_text(value), ProblemKind.UNPARSABLE)


def _time(field: str, value: str | None) -> tuple[datetime | None, TelemetryProblem | None]:
    if value is None or value.strip() == "":
        return None, TelemetryProblem(field, raw_text(value), ProblemKind.MISSING)
    parsed = parse_time(value)
    if parsed is None:
        return None, TelemetryProblem(field, raw_text(value), ProblemKind.UNPARSABLE)
    return parsed, None


def _label(labels: Mapping[str, str], key: str) -> str | None:
    value = labels.get(key)
    if value is None or not isinstance(value, str) or value.strip() == "":
        return None
    return value.strip()


def parse_vehicle_reading(
    labels: Mapping[str, str] | None, annotations: Mapping[str, str] | None
) -> VehicleReading:
    """Parse a vehicle Node's labels and annotations. Pure; never raises on bad values.

    Missing/unparsable/non-finite/out-of-range values become ``None`` with a problem naming the
    annotation suffix (e.g. ``soc-percent``). No staleness here: call :meth:`VehicleReading.at`.
    """
    labels = labels or {}
    annotations = annotations or {}

    def ann(suffix: str) -> str | None:
        value = annotations.get(ANNOTATION_PREFIX + suffix)
        return value if isinstance(value, str) or value is None else str(value)

    problems: list[TelemetryProblem] = []

    def keep(result: tuple[_T | None, TelemetryProblem | None]) -> _T | None:
        value, problem = result
        if problem is not None:
            problems.append(problem)
        return value

    soc = keep(check_range(SOC, ann(SOC), *SOC_RANGE))
    plugged = keep(_bool(PLUGGED_IN, ann(PLUGGED_IN)))
    charger = keep(check_range(CHARGER_POWER, ann(CHARGER_POWER), *CHARGER_KW_RANGE))
    battery = keep(check_range(BATTERY_TEMP, ann(BATTERY_TEMP), *TEMP_C_RANGE))
    compute = keep(check_range(COMPUTE_TEMP, ann(COMPUTE_TEMP), *TEMP_C_RANGE))
    departure = keep(_time(DEPARTURE, ann(DEPARTURE)))
    target = keep(check_range(TARGET_SOC, ann(TARGET_SOC), *SOC_RANGE))
    bandwidth = keep(check_range(BANDWIDTH, ann(BANDWIDTH), *BANDWIDTH_RANGE))
    observed = keep(_time(OBSERVED_AT, ann(OBSERVED_AT)))

    attested_raw = labels.get(ATTESTED_LABEL)
    return VehicleReading(
        soc_percent=soc,
        plugged_in=plugged,
        charger_power_kw=charger,
        battery_temp_c=battery,
        compute_temp_c=compute,
        departure_time=departure,
        target_soc_percent=target,
        bandwidth_mbps=bandwidth,
        observed_at=observed,
        pool=_label(labels, POOL_LABEL),
        region=_label(labels, REGION_LABEL),
        attested=isinstance(attested_raw, str) and attested_raw.strip().lower() == "true",
        problems=tuple(problems),
    )
