"""The dispatcher's fleet view: slots from EndpointSlices as the gateway routes, a car's
leave-by time from its telemetry and its pool's drain lead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tokenfleet.batch.fleet import FleetView

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def job() -> dict[str, Any]:
    return {
        "metadata": {"name": "j", "namespace": "ns"},
        "spec": {
            "model": {"name": "m"},
            "variants": [
                {"name": "fp16", "tokensPerSecond": 40, "watts": 700},
                {"name": "int4", "tokensPerSecond": 20, "watts": 60},
            ],
        },
        "status": {
            "placements": [
                {"node": "rack", "variant": "fp16", "target": "Rack", "state": "Loaded"},
                {"node": "car", "variant": "int4", "target": "Vehicle", "state": "Loaded"},
                {"node": "gone", "variant": "int4", "target": "Vehicle", "state": "Loaded"},
            ]
        },
    }


def endpoint(node: str, ready: bool = True) -> dict[str, Any]:
    return {"addresses": ["10.0.0.1"], "nodeName": node, "conditions": {"ready": ready}}


def node(name: str, role: str, **telemetry: str) -> dict[str, Any]:
    annotations = {"tokenfleet.io/runtime-endpoint": f"127.0.0.1:{800 + len(name)}"}
    annotations |= {f"telemetry.tokenfleet.io/{k}": v for k, v in telemetry.items()}
    return {
        "metadata": {
            "name": name,
            "labels": {"tokenfleet.io/role": role, "tokenfleet.io/pool": "p"},
            "annotations": annotations,
        },
        "status": {"allocatable": {"memory": "32Gi"}},
    }


def view(**car: str) -> FleetView:
    fleet = FleetView()
    fleet.set_job(job())
    fleet.table.set_slice(
        {
            "metadata": {
                "name": "j-tokenfleet",
                "namespace": "ns",
                "labels": {"kubernetes.io/service-name": "j"},
            },
            "endpoints": [endpoint("rack"), endpoint("car"), endpoint("gone", ready=False)],
        }
    )
    fleet.set_pool({"metadata": {"name": "p"}, "spec": {"drainLeadSeconds": 600}})
    fleet.set_node(node("rack", "rack"))
    telemetry = {
        "plugged-in": "true",
        "departure-time": stamp(NOW + timedelta(hours=1)),
        "observed-at": stamp(NOW),
    }
    fleet.set_node(node("car", "vehicle", **(telemetry | car)))
    fleet.set_node(node("gone", "vehicle", **telemetry))
    return fleet


def test_slots_are_the_ready_replicas_with_departure_less_drain_lead() -> None:
    slots = {s.node: s for s in view().slots("ns", "j", NOW.timestamp())}
    assert set(slots) == {"rack", "car"}  # "gone" left the ready set
    assert slots["rack"].target == "Rack" and slots["rack"].leave_by is None
    assert slots["rack"].model == "m-fp16" and slots["rack"].watts == 700
    assert slots["car"].leave_by == (NOW + timedelta(hours=1) - timedelta(seconds=600)).timestamp()
    assert slots["car"].tokens_per_second == 20 and slots["car"].endpoint == "127.0.0.1:803"


def test_unplugged_stale_or_unknown_departure_cars_get_no_leave_by() -> None:
    now = NOW.timestamp()
    assert view(**{"plugged-in": "false"}).leave_by("car", now) is None
    assert view(**{"departure-time": "soon"}).leave_by("car", now) is None
    stale = stamp(NOW - timedelta(hours=2))  # older than staleAfterSeconds (default 300)
    assert view(**{"observed-at": stale}).leave_by("car", now) is None
    assert view().slots("ns", "other", now) == []
