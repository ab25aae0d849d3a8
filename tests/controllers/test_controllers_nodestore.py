"""The node store (what the node watch fills) and what a change of a Node's record signals."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from fixtures_controllers import rack, vehicle

from tokenfleet.controllers.fleet import FleetView
from tokenfleet.controllers.nodes import select_nodes
from tokenfleet.controllers.nodesignals import NodeSignals
from tokenfleet.controllers.nodestore import NodeStore
from tokenfleet.controllers.planner import Planner
from tokenfleet.controllers.settings import OperatorConfig
from tokenfleet.telemetry.node import NodeRole


def test_apply_returns_none_for_an_unchanged_record_and_the_change_otherwise() -> None:
    store = NodeStore()
    car = vehicle("car-1")
    first = store.apply(car)
    assert first is not None and first.first and first.current is car
    # the same parsed record (a heartbeat, a status field placement does not read): nothing
    assert store.apply(vehicle("car-1")) is None
    hot = vehicle("car-1", battery_temp_c="58")
    change = store.apply(hot)
    assert change is not None and not change.first and change.previous is car
    assert store.get("car-1") is hot


def test_groups_follow_pool_and_tank_moves_and_deletes() -> None:
    store = NodeStore()
    store.replace([vehicle("car-1", "vans"), vehicle("car-2", "vans"), rack("r1", "tank-a")])
    assert sorted(store.by_pool) == ["vans"]
    assert sorted(n.name for n in store.by_pool["vans"]) == ["car-1", "car-2"]
    assert [n.name for n in store.by_tank["tank-a"]] == ["r1"]
    assert [n.name for n in store.by_name["car-1"]] == ["car-1"]
    store.apply(vehicle("car-2", "buses"))
    assert [n.name for n in store.by_pool["vans"]] == ["car-1"]
    assert [n.name for n in store.by_pool["buses"]] == ["car-2"]
    gone = store.remove("car-1")
    assert gone is not None and gone.deleted and gone.previous is not None
    assert "vans" not in store.by_pool  # an emptied group is dropped
    assert store.remove("car-1") is None
    # a selector read goes through the groups as it went through kopf's indexes
    chosen = select_nodes(
        {"tokenfleet.io/pool": "buses"},
        by_name=store.by_name,
        by_pool=store.by_pool,
        role=NodeRole.VEHICLE,
    )
    assert [n.name for n in chosen] == ["car-2"]


def test_replace_reports_new_changed_and_gone_and_marks_synced() -> None:
    store = NodeStore()
    assert not store.synced
    assert [c.name for c in store.replace([vehicle("car-1"), vehicle("car-2")])] == [
        "car-1",
        "car-2",
    ]
    assert store.synced
    changes = store.replace([vehicle("car-1"), vehicle("car-3")])
    assert sorted((c.name, c.first, c.deleted) for c in changes) == [
        ("car-2", False, True),
        ("car-3", True, False),
    ]
    assert store.replace([vehicle("car-1"), vehicle("car-3")]) == []
    assert len(store) == 2


def test_fleet_view_reads_the_store() -> None:
    fleet = FleetView(OperatorConfig())
    assert not fleet.nodes_synced and fleet.nodes() == [] and fleet.node("car-1") is None
    fleet.node_store.replace([vehicle("car-1"), rack("r1")])
    assert fleet.nodes_synced
    assert sorted(n.name for n in fleet.nodes()) == ["car-1", "r1"]
    assert fleet.node("r1") is not None and fleet.node("r1") == rack("r1")


class _Poster:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str, str, str]] = []

    def post(self, body: Any, type_: str, reason: str, message: str) -> None:
        self.posted.append((body["metadata"]["name"], type_, reason, message))


def _ref(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": "u-" + name}}


async def test_signals_are_incremental_for_a_known_node_and_full_for_new_or_gone() -> None:
    config = OperatorConfig()
    fleet = FleetView(config)
    planner = Planner(config, fleet)
    poster = _Poster()
    signals = NodeSignals(planner, fleet.node_store, lambda: cast(Any, poster))
    store = fleet.node_store

    signals(store.replace([vehicle("car-1"), vehicle("car-2")]), {})
    assert planner._signals.full and planner._signals.nodes == {"car-1", "car-2"}
    assert not planner._ready.is_set()  # kopf's handlers have not run yet
    planner.mark_ready()
    assert planner._ready.is_set() and "startup" in planner._signals.triggers

    planner._signals = type(planner._signals)()
    change = store.apply(vehicle("car-1", soc_percent="40"))
    assert change is not None
    signals([change], {"car-1": _ref("car-1")})
    assert not planner._signals.full and planner._signals.nodes == {"car-1"}

    planner._signals = type(planner._signals)()
    gone = store.remove("car-2")
    assert gone is not None
    signals([gone], {"car-2": _ref("car-2")})
    assert planner._signals.full
    assert poster.posted == []

    # a car whose telemetry is rejected: one Warning Event, not again for the same problems
    bad = store.apply(vehicle("car-1", soc_percent="lots"))
    assert bad is not None
    signals([bad], {"car-1": _ref("car-1")})
    again = store.apply(vehicle("car-1", soc_percent="lots", charger_power_kw="7"))
    assert again is not None
    signals([again], {"car-1": _ref("car-1")})
    assert [(n, t, r) for n, t, r, _ in poster.posted] == [
        ("car-1", "Warning", "TelemetryRejected")
    ]
    assert "soc-percent" in poster.posted[0][3]
    await asyncio.sleep(0)


async def test_an_empty_first_list_still_makes_the_planner_ready() -> None:
    config = OperatorConfig()
    fleet = FleetView(config)
    planner = Planner(config, fleet)
    planner.mark_ready()
    assert not planner._ready.is_set()  # the Nodes are not known yet
    waiting = asyncio.ensure_future(planner.wait_nodes_synced())
    await asyncio.sleep(0)
    assert not waiting.done()  # the job daemons wait for the Nodes to be listed
    NodeSignals(planner, fleet.node_store, lambda: None)(fleet.node_store.replace([]), {})
    assert planner._ready.is_set()
    await asyncio.wait_for(waiting, 1)
