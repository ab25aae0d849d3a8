"""The node watch's event path without a cluster: what is parsed, dropped and handed over."""

from __future__ import annotations

import copy
from typing import Any

from tokenfleet.controllers.nodestore import NodeStore
from tokenfleet.controllers.nodewatch import NodeWatch
from tokenfleet.telemetry.node import NodeInfo, node_fields, parse_node


def _body(**annotations: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "car-1",
            "uid": "u1",
            "resourceVersion": "1",
            "labels": {"tokenfleet.io/role": "vehicle", "tokenfleet.io/pool": "p"},
            "annotations": {"telemetry.tokenfleet.io/soc-percent": "80", **annotations},
            "managedFields": [{"manager": "kwok", "time": "2026-12-03T00:00:00Z"}],
        },
        "spec": {},
        "status": {
            "allocatable": {"memory": "32Gi", "cpu": "8"},
            "conditions": [
                {"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-12-03T00:00:00Z"},
                {"type": "MemoryPressure", "status": "False"},
            ],
        },
    }


class _Loop:
    def __init__(self) -> None:
        self.posted: list[tuple[Any, ...]] = []

    def is_closed(self) -> bool:
        return False

    def call_soon_threadsafe(self, fn: Any, *args: Any) -> None:
        self.posted.append((fn, *args))


def _watch() -> tuple[NodeWatch, _Loop, list[str]]:
    parsed: list[str] = []

    def parse(body: Any) -> NodeInfo:
        parsed.append(body["metadata"]["resourceVersion"])
        return parse_node(body)

    watch = NodeWatch(kube=None, store=NodeStore(), parse=parse, on_changes=lambda c, r: None)  # type: ignore[arg-type]
    loop = _Loop()
    watch._loop = loop  # type: ignore[assignment]
    return watch, loop, parsed


def _version(body: dict[str, Any], version: str) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out["metadata"]["resourceVersion"] = version
    return out


def test_a_heartbeat_is_not_parsed_and_a_relevant_change_is() -> None:
    watch, loop, parsed = _watch()
    first = _body()
    watch._event("ADDED", first)
    assert parsed == ["1"] and len(loop.posted) == 1
    # kwok's status report: heartbeat times, managedFields, another condition, cpu
    beat = _version(first, "2")
    beat["status"]["conditions"][0]["lastHeartbeatTime"] = "2026-12-03T00:05:00Z"
    beat["status"]["conditions"][1]["status"] = "True"
    beat["status"]["allocatable"]["cpu"] = "4"
    beat["metadata"]["managedFields"][0]["time"] = "2026-12-03T00:05:00Z"
    watch._event("MODIFIED", beat)
    assert parsed == ["1"] and len(loop.posted) == 1
    assert watch.dropped == 1 and watch.unparsed == 1
    # an annotation placement ignores is parsed, then dropped as the same record
    other = _version(beat, "3")
    other["metadata"]["annotations"]["unrelated"] = "x"
    watch._event("MODIFIED", other)
    assert parsed == ["1", "3"] and len(loop.posted) == 1 and watch.unparsed == 1
    # a reading that changed is parsed and handed over
    unplug = _version(other, "4")
    unplug["metadata"]["annotations"]["telemetry.tokenfleet.io/soc-percent"] = "40"
    watch._event("MODIFIED", unplug)
    assert parsed == ["1", "3", "4"] and len(loop.posted) == 2
    # readiness, schedulability and memory are read too
    for version, change in (
        ("5", lambda b: b["status"]["conditions"][0].update(status="False")),
        ("6", lambda b: b["spec"].update(unschedulable=True)),
        ("7", lambda b: b["status"]["allocatable"].update(memory="16Gi")),
    ):
        body = _version(unplug, version)
        change(body)
        watch._event("MODIFIED", body)
        assert parsed[-1] == version
        unplug = body
    # deleted and added again: parsed again even with the same fields
    watch._event("DELETED", unplug)
    watch._event("ADDED", _version(unplug, "9"))
    assert parsed[-1] == "9"


def test_equal_fields_mean_equal_records() -> None:
    base = _body()
    variants = [base]
    for path, value in (
        (("metadata", "labels", "tokenfleet.io/pool"), "q"),
        (("metadata", "annotations", "telemetry.tokenfleet.io/plugged-in"), "false"),
        (("metadata", "deletionTimestamp"), "2026-12-03T00:00:00Z"),
        (("spec", "unschedulable"), True),
        (("status", "allocatable", "memory"), "1Gi"),
    ):
        body = copy.deepcopy(base)
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        variants.append(body)
    not_ready = copy.deepcopy(base)
    not_ready["status"]["conditions"][0]["status"] = "Unknown"
    variants.append(not_ready)
    # each relevant change shows in the fields and in the record
    assert len({repr(node_fields(v)) for v in variants}) == len(variants)
    records = [parse_node(v) for v in variants]
    assert all(a != b for i, a in enumerate(records) for b in records[i + 1 :])
    # what the fields leave out leaves the record as it was
    beat = copy.deepcopy(base)
    beat["status"]["conditions"][0]["lastHeartbeatTime"] = "2026-12-03T01:00:00Z"
    beat["metadata"]["managedFields"] = []
    assert node_fields(beat) == node_fields(base) and parse_node(beat) == parse_node(base)
