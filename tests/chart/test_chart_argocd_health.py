"""The chart's Argo CD health check (files/argocd-health.lua), run in a real Lua interpreter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa
import pytest

SCRIPT = (Path(__file__).parents[2] / "charts/tokenfleet/files/argocd-health.lua").read_text()


def health(obj: dict[str, Any]) -> tuple[str, str]:
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)

    def to_lua(value: Any) -> Any:
        if isinstance(value, dict):
            return lua.table_from({k: to_lua(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([to_lua(v) for v in value])
        return value

    lua.globals().obj = to_lua(obj)
    result = lua.execute(SCRIPT)
    return str(result["status"]), str(result["message"])


def job(generation: int, observed: int | None, *conditions: tuple[str, str, str]) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"generation": generation}}
    if observed is not None:
        obj["status"] = {
            "observedGeneration": observed,
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": f"{t} {r}"}
                for t, s, r in conditions
            ],
        }
    return obj


@pytest.mark.parametrize(
    ("obj", "status", "message"),
    [
        (job(1, None), "Progressing", "Waiting for the tokenfleet operator"),
        (job(2, 1, ("Ready", "True", "Serving")), "Progressing", "generation 2"),
        (job(1, 1, ("Ready", "True", "Serving")), "Healthy", "Ready Serving"),
        (
            job(1, 1, ("Ready", "False", "Loading"), ("Reconciling", "True", "Loading")),
            "Progressing",
            "Reconciling Loading",
        ),
        (
            job(1, 1, ("Ready", "False", "NoEligibleNode"), ("Stalled", "True", "NoEligibleNode")),
            "Degraded",
            "Stalled NoEligibleNode",
        ),
        (job(1, 1, ("Ready", "False", "LeakDetected")), "Degraded", "Ready LeakDetected"),
        (job(1, 1, ("Ready", "Unknown", "Pending")), "Progressing", "Waiting"),
    ],
)
def test_kstatus_conditions_map_to_argocd_health(
    obj: dict[str, Any], status: str, message: str
) -> None:
    got_status, got_message = health(obj)
    assert got_status == status
    assert message in got_message


def pool(reason: str, ready: str = "False") -> dict[str, Any]:
    obj = job(1, 1, ("Ready", ready, reason))
    obj["kind"] = "VehiclePool"
    return obj


@pytest.mark.parametrize(
    ("obj", "status"),
    [
        # cars away or charging (the daytime norm), or none yet: not an outage
        (pool("NoEligibleVehicles"), "Healthy"),
        (pool("NoVehicles"), "Healthy"),
        (pool("VehiclesEligible", "True"), "Healthy"),
        (pool("Cordoned"), "Suspended"),
        (pool("InvalidSpec"), "Degraded"),
        # only pools: a job with no eligible node is still Degraded
        (job(1, 1, ("Ready", "False", "NoEligibleVehicles")), "Degraded"),
    ],
)
def test_pool_health_does_not_follow_the_cars(obj: dict[str, Any], status: str) -> None:
    assert health(obj)[0] == status
