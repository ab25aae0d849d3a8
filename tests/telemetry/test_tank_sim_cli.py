"""The simulator's CLI (`python -m e2e.sim.tank`) and its cross-process control API, and a
property test: whatever JSON a BMC serves, the Redfish parser never raises."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tokenfleet.telemetry.immersion import LeakDetector, LeakState, parse_unit


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_cli_serves_tanks_and_control_api() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "e2e.sim.tank", "--tanks", "tank-a,tank-b"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        url = info["url"]
        assert info["tanks"] == ["tank-a", "tank-b"]
        assert url.startswith("http://127.0.0.1:")
        units = _get(url + "/redfish/v1/ThermalEquipment/ImmersionUnits")
        assert [m["@odata.id"].rsplit("/", 1)[1] for m in units["Members"]] == ["tank-a", "tank-b"]
        request = urllib.request.Request(
            url + "/_sim/tanks/tank-b",
            data=json.dumps({"return_c": 47.5, "leak": {"M1": "Critical"}}).encode(),
            method="PATCH",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read())["return_c"] == 47.5
        connector = _get(
            url + "/redfish/v1/ThermalEquipment/ImmersionUnits/tank-b/PrimaryCoolantConnectors/1"
        )
        assert connector["ReturnTemperatureCelsius"]["Reading"] == 47.5
        detector = _get(
            url
            + "/redfish/v1/ThermalEquipment/ImmersionUnits/tank-b/LeakDetection/LeakDetectors/M1"
        )
        assert detector["DetectorState"] == "Critical"
        bad = urllib.request.Request(
            url + "/_sim/tanks/tank-b", data=b'{"nope": 1}', method="PATCH"
        )
        try:
            urllib.request.urlopen(bad, timeout=5)
            raise AssertionError("unknown field accepted")
        except urllib.error.HTTPError as error:
            assert error.code == 400
    finally:
        proc.terminate()
        proc.wait(10)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers()
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["Reading", "Health", "x"]), children, max_size=3)
    ),
    max_leaves=6,
)
PROPS = [
    "SupplyTemperatureCelsius",
    "ReturnTemperatureCelsius",
    "FlowLitersPerMinute",
    "HeatRemovedkW",
]


@given(
    st.dictionaries(st.sampled_from(["CoolingCapacityWatts", "Coolant", "Status"]), json_values),
    st.dictionaries(st.sampled_from(PROPS), json_values),
    st.none() | st.lists(st.sampled_from([None, "OK", "Warning", "Critical"]), max_size=3),
)
def test_parse_unit_never_raises(
    unit: dict[str, Any], connector: dict[str, Any], states: list[str | None] | None
) -> None:
    from tokenfleet.telemetry.immersion import Health

    detectors = (
        None
        if states is None
        else [LeakDetector(f"d{i}", None if s is None else Health(s)) for i, s in enumerate(states)]
    )
    r = parse_unit("u", unit, connector, detectors, datetime(2026, 1, 1, tzinfo=UTC))
    for value in (r.supply_temp_c, r.return_temp_c, r.flow_lpm, r.heat_removed_kw):
        assert value is None or math.isfinite(value)
    fields = {p.field for p in r.problems}
    assert (r.supply_temp_c is None) == ("SupplyTemperatureCelsius" in fields)
    assert (r.heat_removed_kw is None) == ("HeatRemovedkW" in fields)
    if states is None or (not states):
        assert r.leak_state is LeakState.UNKNOWN
    elif "Critical" in states:
        assert r.leak_state is LeakState.CRITICAL
