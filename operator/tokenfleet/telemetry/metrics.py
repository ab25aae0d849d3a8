"""Prometheus metrics owned by the telemetry side (registered in the default registry).

The operator's ``tokenfleet.metrics`` serves the default registry, so these are exported as soon
as this module is imported (the controllers import it).

=============================================  =======  ======================================
name                                           type     labels
=============================================  =======  ======================================
tokenfleet_telemetry_rejected_total            counter  kind (vehicle|tank), field, problem
tokenfleet_telemetry_age_seconds               gauge    kind (tank|vehiclepool), name
tokenfleet_telemetry_poll_total                counter  tank, result (ok|error)
tokenfleet_tank_headroom_kilowatts             gauge    tank, resource (power|thermal)
tokenfleet_tank_it_load_kilowatts              gauge    tank
tokenfleet_tank_leak_detected                  gauge    tank (1 = Warning/Critical)
tokenfleet_vehiclepool_vehicles                gauge    pool, state (total|eligible|serving)
tokenfleet_vehiclepool_ineligible_vehicles     gauge    pool, reason
=============================================  =======  ======================================

Label cardinality: ``field`` and ``problem`` are bounded enums; vehicles are never a label
(``tokenfleet_telemetry_age_seconds{kind="vehiclepool"}`` is the oldest fresh-or-not reading
in the pool). A series whose value becomes unknown is removed, not set to a guess.
"""

from __future__ import annotations

import contextlib
from typing import Final

from prometheus_client import Counter, Gauge

__all__ = [
    "POOL_INELIGIBLE",
    "POOL_VEHICLES",
    "TANK_HEADROOM",
    "TANK_IT_LOAD",
    "TANK_LEAK",
    "TELEMETRY_AGE",
    "TELEMETRY_POLLS",
    "TELEMETRY_REJECTED",
    "clear_gauge",
]

TELEMETRY_REJECTED: Final = Counter(
    "tokenfleet_telemetry_rejected",
    "Telemetry fields rejected as unknown (missing, unparsable, out of range, non-finite, stale).",
    ["kind", "field", "problem"],
)
TELEMETRY_AGE: Final = Gauge(
    "tokenfleet_telemetry_age_seconds",
    "Age of the latest telemetry reading (tank), or of the oldest vehicle reading (vehiclepool).",
    ["kind", "name"],
)
TELEMETRY_POLLS: Final = Counter(
    "tokenfleet_telemetry_poll",
    "Redfish polls of an immersion tank by result.",
    ["tank", "result"],
)
TANK_HEADROOM: Final = Gauge(
    "tokenfleet_tank_headroom_kilowatts",
    "Tank headroom in kW (power: limit minus IT load; thermal: heat limit minus heat).",
    ["tank", "resource"],
)
TANK_IT_LOAD: Final = Gauge(
    "tokenfleet_tank_it_load_kilowatts", "Measured IT load of a tank in kW.", ["tank"]
)
TANK_LEAK: Final = Gauge(
    "tokenfleet_tank_leak_detected",
    "1 when a tank's leak detectors report Warning/Critical.",
    ["tank"],
)
POOL_VEHICLES: Final = Gauge(
    "tokenfleet_vehiclepool_vehicles", "Vehicles in a pool by state.", ["pool", "state"]
)
POOL_INELIGIBLE: Final = Gauge(
    "tokenfleet_vehiclepool_ineligible_vehicles",
    "Vehicles of a pool that cannot take new work, by reason.",
    ["pool", "reason"],
)


def clear_gauge(gauge: Gauge, *labels: str) -> None:
    """Remove a labelled series if present (unknown values are not exported as numbers)."""
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)
