"""NodeInfo parsing and node selection (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from tokenfleet.controllers.nodes import first, parse_runtime_pod, select_nodes
from tokenfleet.telemetry.node import NodeRole, parse_node, parse_quantity_mib
from tokenfleet.telemetry.problems import ProblemKind


def node(
    name: str, labels: dict[str, str], annotations: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": name, "labels": labels, "annotations": annotations or {}},
        "spec": extra.pop("spec", {}),
        "status": {
            "allocatable": {"memory": extra.pop("memory", "16Gi")},
            "conditions": [{"type": "Ready", "status": extra.pop("ready", "True")}],
        },
    }
    body["metadata"].update(extra)
    return body


@pytest.mark.parametrize(
    ("quantity", "mib"),
    [
        ("16Gi", 16384),
        ("33554432Ki", 32768),
        ("1048576", 1),
        ("1e9", 953),
        ("500M", 476),
        ("1.5Gi", 1536),
        (2147483648, 2048),
        ("", None),
        ("lots", None),
        ("-1Gi", None),
        (None, None),
        (True, None),
    ],
)
def test_quantity(quantity: object, mib: int | None) -> None:
    assert parse_quantity_mib(quantity) == mib


def test_rack_node() -> None:
    info = parse_node(
        node(
            "rack-1",
            {
                "tokenfleet.io/role": "rack",
                "tokenfleet.io/tank": "tank-a",
                "tokenfleet.io/accelerator": "l40s",
                "node-restriction.kubernetes.io/tokenfleet-region": "eu-west",
            },
            {
                "tokenfleet.io/baseline-watts": "350",
                "tokenfleet.io/runtime-endpoint": "127.0.0.1:8001",
            },
            spec={"unschedulable": True},
        )
    )
    assert info.role is NodeRole.RACK and info.is_rack and not info.is_vehicle
    assert (info.tank, info.pool, info.accelerator, info.region) == (
        "tank-a",
        None,
        "l40s",
        "eu-west",
    )
    assert info.allocatable_memory_mib == 16384
    assert info.baseline_watts == 350.0
    assert info.runtime_endpoint == "127.0.0.1:8001"
    assert info.unschedulable and info.ready is True and not info.deleting
    assert info.vehicle is None and info.problems == ()
    assert info.attested is False


def test_vehicle_node_and_bad_node_fields() -> None:
    info = parse_node(
        node(
            "car-1",
            {"tokenfleet.io/role": "vehicle", "tokenfleet.io/pool": "pool-a"},
            {
                "tokenfleet.io/baseline-watts": "nan",
                "tokenfleet.io/runtime-endpoint": "no-port",
                "telemetry.tokenfleet.io/soc-percent": "55",
            },
            memory="garbage",
            ready="Unknown",
            deletionTimestamp="2026-11-25T12:00:00Z",
        )
    )
    assert info.is_vehicle and info.pool == "pool-a"
    assert info.vehicle is not None and info.vehicle.soc_percent == 55.0
    assert info.allocatable_memory_mib is None and info.baseline_watts == 0.0
    assert info.runtime_endpoint is None and info.ready is None and info.deleting
    assert {p.field: p.kind for p in info.problems} == {
        "allocatable.memory": ProblemKind.UNPARSABLE,
        "tokenfleet.io/baseline-watts": ProblemKind.NON_FINITE,
        "tokenfleet.io/runtime-endpoint": ProblemKind.UNPARSABLE,
    }


def test_unknown_role() -> None:
    info = parse_node(node("x", {"tokenfleet.io/role": "toaster"}))
    assert info.role is None and not info.is_rack and not info.is_vehicle
    assert info.problems[0].field == "tokenfleet.io/role"


def test_select_nodes() -> None:
    infos = [
        parse_node(
            node("car-2", {"tokenfleet.io/role": "vehicle", "tokenfleet.io/pool": "a", "zone": "x"})
        ),
        parse_node(node("car-1", {"tokenfleet.io/role": "vehicle", "tokenfleet.io/pool": "a"})),
        parse_node(node("car-3", {"tokenfleet.io/role": "vehicle", "tokenfleet.io/pool": "b"})),
        parse_node(node("rack-1", {"tokenfleet.io/role": "rack", "tokenfleet.io/tank": "t"})),
    ]
    by_name = {i.name: [i] for i in infos}
    by_pool: dict[str, list[Any]] = {}
    for i in infos:
        if i.pool:
            by_pool.setdefault(i.pool, []).append(i)
    names = lambda xs: [x.name for x in xs]  # noqa: E731
    assert names(select_nodes({"tokenfleet.io/pool": "a"}, by_name=by_name, by_pool=by_pool)) == [
        "car-1",
        "car-2",
    ]
    assert names(select_nodes({"tokenfleet.io/pool": "a", "zone": "x"}, by_name=by_name)) == [
        "car-2"
    ]
    assert names(select_nodes({}, by_name=by_name, role=NodeRole.VEHICLE)) == [
        "car-1",
        "car-2",
        "car-3",
    ]
    assert names(select_nodes({"tokenfleet.io/tank": "t"}, by_name=by_name)) == ["rack-1"]
    assert (
        names(select_nodes({"tokenfleet.io/pool": "zzz"}, by_name=by_name, by_pool=by_pool)) == []
    )
    assert first(by_name, "car-3") is infos[2] and first(by_name, "nope") is None


def test_runtime_pod() -> None:
    pod = parse_runtime_pod(
        {
            "metadata": {"name": "rt-1", "namespace": "tokenfleet"},
            "spec": {"nodeName": "car-1"},
            "status": {"podIP": "10.0.0.5", "conditions": [{"type": "Ready", "status": "True"}]},
        }
    )
    assert pod is not None and pod.node == "car-1" and pod.ready and not pod.deleting
    assert parse_runtime_pod({"metadata": {"name": "p"}, "spec": {}}) is None
