"""The vehicle signals the agent publishes, and how they become Node annotations (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from tokenfleet.telemetry.problems import ProblemKind, TelemetryProblem, check_range, raw_text
from tokenfleet.telemetry.vehicle import (
    ANNOTATION_PREFIX,
    BANDWIDTH,
    BANDWIDTH_RANGE,
    BATTERY_TEMP,
    CHARGER_KW_RANGE,
    CHARGER_POWER,
    COMPUTE_TEMP,
    DEPARTURE,
    OBSERVED_AT,
    PLUGGED_IN,
    SOC,
    SOC_RANGE,
    TARGET_SOC,
    TEMP_C_RANGE,
    format_time,
    parse_time,
)

__all__ = ["VSS_ALIASES", "Sample", "VehicleSignals", "annotations_for", "signals_from_mapping"]

VSS_ALIASES: Final[Mapping[str, str]] = {
    # Accepted source keys (COVESA VSS paths) -> contract names.
    "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current": SOC,
    "Vehicle.Powertrain.TractionBattery.Charging.IsChargingCableConnected": PLUGGED_IN,
    "Vehicle.Powertrain.TractionBattery.Charging.ChargingPort.AnyPosition."
    "IsChargingCableConnected": PLUGGED_IN,
    "Vehicle.Powertrain.TractionBattery.Charging.Power": CHARGER_POWER,
    "Vehicle.Powertrain.TractionBattery.Temperature.Average": BATTERY_TEMP,
    "Vehicle.Powertrain.TractionBattery.Charging.ChargeLimit": TARGET_SOC,
}


@dataclass(frozen=True, slots=True)
class VehicleSignals:
    """What the car reports now. ``None`` = not available (the annotation is removed)."""

    soc_percent: float | None = None
    plugged_in: bool | None = None
    charger_power_kw: float | None = None
    battery_temp_c: float | None = None
    compute_temp_c: float | None = None
    departure_time: datetime | None = None
    target_soc_percent: float | None = None
    bandwidth_mbps: float | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """One read of a source: the signals, when the car observed them, and rejected values."""

    signals: VehicleSignals
    observed_at: datetime
    """Aware UTC. From the source itself (never the agent's clock), so a dead gateway goes stale."""
    problems: tuple[TelemetryProblem, ...] = ()


def _bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _time(value: object) -> datetime | None:
    return parse_time(value) if isinstance(value, str) else None


def signals_from_mapping(
    doc: Mapping[str, Any],
) -> tuple[VehicleSignals, tuple[TelemetryProblem, ...]]:
    """Signals from a gateway document keyed by contract names (``soc-percent``, ...) or by the
    VSS paths in :data:`VSS_ALIASES`. Values may be JSON numbers/booleans or strings. Invalid
    values become ``None`` (so the operator sees them as Missing) and are returned as problems;
    absent keys are ``None`` without a problem."""
    data: dict[str, Any] = {}
    for key, value in doc.items():
        data[VSS_ALIASES.get(key, key)] = value
    problems: list[TelemetryProblem] = []

    def number(name: str, low: float, high: float) -> float | None:
        if data.get(name) is None:
            return None
        value, problem = check_range(name, data[name], low, high)
        if problem is not None:
            problems.append(problem)
        return value

    plugged = _bool(data.get(PLUGGED_IN))
    departure = _time(data.get(DEPARTURE))
    for name, parsed in ((PLUGGED_IN, plugged), (DEPARTURE, departure)):
        if data.get(name) is not None and parsed is None:
            problems.append(TelemetryProblem(name, raw_text(data[name]), ProblemKind.UNPARSABLE))
    signals = VehicleSignals(
        soc_percent=number(SOC, *SOC_RANGE),
        plugged_in=plugged,
        charger_power_kw=number(CHARGER_POWER, *CHARGER_KW_RANGE),
        battery_temp_c=number(BATTERY_TEMP, *TEMP_C_RANGE),
        compute_temp_c=number(COMPUTE_TEMP, *TEMP_C_RANGE),
        departure_time=departure,
        target_soc_percent=number(TARGET_SOC, *SOC_RANGE),
        bandwidth_mbps=number(BANDWIDTH, *BANDWIDTH_RANGE),
    )
    return signals, tuple(problems)


def _decimal(value: float) -> str:
    """Plain decimal string: no exponent, at most 3 decimals, no trailing zeros."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def annotations_for(signals: VehicleSignals, observed_at: datetime) -> dict[str, str | None]:
    """The annotation patch for a reading: every contract key, ``None`` (= delete) if unknown."""
    values: dict[str, str | None] = {
        SOC: None if signals.soc_percent is None else _decimal(signals.soc_percent),
        PLUGGED_IN: None if signals.plugged_in is None else str(signals.plugged_in).lower(),
        CHARGER_POWER: None
        if signals.charger_power_kw is None
        else _decimal(signals.charger_power_kw),
        BATTERY_TEMP: None if signals.battery_temp_c is None else _decimal(signals.battery_temp_c),
        COMPUTE_TEMP: None if signals.compute_temp_c is None else _decimal(signals.compute_temp_c),
        DEPARTURE: None if signals.departure_time is None else format_time(signals.departure_time),
        TARGET_SOC: None
        if signals.target_soc_percent is None
        else _decimal(signals.target_soc_percent),
        BANDWIDTH: None if signals.bandwidth_mbps is None else _decimal(signals.bandwidth_mbps),
        OBSERVED_AT: format_time(observed_at),
    }
    return {ANNOTATION_PREFIX + key: value for key, value in values.items()}
