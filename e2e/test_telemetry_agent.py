"""The node agent against the real API server: it patches only its Node's annotations, only on a
meaningful change, and what it writes parses back through the operator's contract parser."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from e2e.cluster.fleet import KWOK_NODE_ANNOTATION, TELEMETRY_PREFIX, Fleet
from tokenfleet.agent.deadband import Deadband
from tokenfleet.agent.publisher import node_annotation_patcher
from tokenfleet.agent.runner import Agent
from tokenfleet.agent.source import JsonFileSource
from tokenfleet.telemetry.node import parse_node


def node_body(fleet: Fleet, name: str) -> dict[str, Any]:
    node = fleet.core_v1().read_node(name)
    body: dict[str, Any] = fleet.core_v1().api_client.sanitize_for_serialization(node)
    return body


def telemetry_of(body: dict[str, Any]) -> dict[str, str]:
    annotations: dict[str, str] = body["metadata"].get("annotations") or {}
    return {k: v for k, v in annotations.items() if k.startswith(TELEMETRY_PREFIX)}


def test_agent_patches_own_node_on_change_only(fleet: Fleet, tmp_path: Path) -> None:
    name = "agent-e2e-car"
    fleet.add_vehicle(name, pool="agent-pool")
    before = node_body(fleet, name)
    gateway = tmp_path / "gateway.json"
    clock = [datetime.now(UTC).replace(microsecond=0)]

    def write(**values: Any) -> None:
        gateway.write_text(json.dumps(values | {"observed-at": clock[0].isoformat()}))

    # Every patch the agent sends goes through here to the real API server. The Node's
    # resourceVersion is no witness: kwok and the node lifecycle controller write it too.
    patcher = node_annotation_patcher(fleet.core_v1(), name)
    sent: list[Mapping[str, str | None]] = []

    def counting_patcher(annotations: Mapping[str, str | None]) -> None:
        sent.append(annotations)
        patcher(annotations)

    agent = Agent(
        JsonFileSource(gateway),
        counting_patcher,
        Deadband(max_silence_seconds=60),
        clock=lambda: clock[0],
    )
    departure = (clock[0] + timedelta(hours=6)).isoformat()
    write(
        **{
            "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current": 64.2,
            "plugged-in": True,
            "charger-power-kw": 11,
            "battery-temp-c": 24.5,
            "compute-temp-c": 51,
            "departure-time": departure,
            "target-soc-percent": 90,
            "bandwidth-mbps": 300,
        }
    )
    assert agent.step().published
    body = node_body(fleet, name)
    annotations = body["metadata"]["annotations"]
    assert annotations[TELEMETRY_PREFIX + "soc-percent"] == "64.2"
    assert annotations[TELEMETRY_PREFIX + "plugged-in"] == "true"
    # only annotations changed: labels, taints and kwok's own annotation are intact
    assert (
        annotations[KWOK_NODE_ANNOTATION] == before["metadata"]["annotations"][KWOK_NODE_ANNOTATION]
    )
    assert body["metadata"]["labels"] == before["metadata"]["labels"]
    assert body["spec"].get("taints") == before["spec"].get("taints")
    info = parse_node(body)
    assert info.vehicle is not None and info.vehicle.problems == ()
    assert info.vehicle.soc_percent == 64.2 and info.vehicle.target_soc_percent == 90.0
    assert info.vehicle.observed_at == clock[0]
    assert len(sent) == 1

    # inside the deadband: no patch is sent and the telemetry on the Node is unchanged
    clock[0] += timedelta(seconds=5)
    write(
        **{
            "soc-percent": 64.9,
            "plugged-in": True,
            "charger-power-kw": 11.3,
            "battery-temp-c": 25.0,
            "compute-temp-c": 51.5,
            "departure-time": departure,
            "target-soc-percent": 90,
            "bandwidth-mbps": 310,
        }
    )
    result = agent.step()
    assert result.decision is not None and not result.decision.publish
    assert len(sent) == 1
    assert telemetry_of(node_body(fleet, name)) == telemetry_of(body)

    # unplugged: immediately; a signal that disappears is removed from the node
    clock[0] += timedelta(seconds=5)
    write(
        **{
            "soc-percent": 64.9,
            "plugged-in": False,
            "battery-temp-c": 25.0,
            "compute-temp-c": 51.5,
            "departure-time": departure,
            "target-soc-percent": 90,
            "bandwidth-mbps": 310,
        }
    )
    result = agent.step()
    assert result.published and result.decision is not None
    assert set(result.decision.reasons) == {"plugged_in", "charger_power_kw"}
    annotations = node_body(fleet, name)["metadata"]["annotations"]
    assert annotations[TELEMETRY_PREFIX + "plugged-in"] == "false"
    assert TELEMETRY_PREFIX + "charger-power-kw" not in annotations
    assert annotations[TELEMETRY_PREFIX + "soc-percent"] == "64.9"  # sent with the change
    assert len(sent) == 2

    # heartbeat after max silence refreshes observed-at
    clock[0] += timedelta(seconds=61)
    write(
        **{
            "soc-percent": 64.9,
            "plugged-in": False,
            "battery-temp-c": 25.0,
            "compute-temp-c": 51.5,
            "departure-time": departure,
            "target-soc-percent": 90,
            "bandwidth-mbps": 310,
        }
    )
    result = agent.step()
    assert result.published and result.decision is not None
    assert result.decision.reasons == ("heartbeat",)
    info = parse_node(node_body(fleet, name))
    assert info.vehicle is not None and info.vehicle.observed_at == clock[0]
    assert agent.writes == 3
