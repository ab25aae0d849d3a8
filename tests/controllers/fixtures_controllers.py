"""Plain-data builders for the controller unit tests (Node bodies, spec dicts, views)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from tokenfleet.controllers.snapshot import JobView, PoolView, TankView
from tokenfleet.telemetry.node import NodeInfo, parse_node

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
_uids = itertools.count()


def uid(name: str) -> str:
    """Unique per view: parsed specs are cached by (uid, generation), as in a cluster."""
    return f"uid-{name}-{next(_uids)}"


def rfc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def vehicle(name: str, pool: str = "pool-a", *, region: str = "eu", **telemetry: str) -> NodeInfo:
    values = {
        "soc-percent": "80",
        "plugged-in": "true",
        "charger-power-kw": "11",
        "battery-temp-c": "25",
        "compute-temp-c": "45",
        "departure-time": rfc(NOW + timedelta(hours=8)),
        "target-soc-percent": "80",
        "bandwidth-mbps": "200",
        "observed-at": rfc(NOW),
    }
    values.update({k.replace("_", "-"): v for k, v in telemetry.items()})
    return parse_node(
        {
            "metadata": {
                "name": name,
                "labels": {
                    "tokenfleet.io/role": "vehicle",
                    "tokenfleet.io/pool": pool,
                    "node-restriction.kubernetes.io/tokenfleet-region": region,
                    "node-restriction.kubernetes.io/tokenfleet-attested": "true",
                },
                "annotations": {
                    **{f"telemetry.tokenfleet.io/{k}": v for k, v in values.items()},
                    "tokenfleet.io/runtime-endpoint": "127.0.0.1:8000",
                },
            },
            "status": {
                "allocatable": {"memory": "32Gi"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
    )


def rack(
    name: str, tank: str = "tank-a", *, region: str = "eu", unschedulable: bool = False
) -> NodeInfo:
    return parse_node(
        {
            "metadata": {
                "name": name,
                "labels": {
                    "tokenfleet.io/role": "rack",
                    "tokenfleet.io/tank": tank,
                    "node-restriction.kubernetes.io/tokenfleet-region": region,
                    "node-restriction.kubernetes.io/tokenfleet-attested": "true",
                },
                "annotations": {
                    "tokenfleet.io/baseline-watts": "1200",
                    "tokenfleet.io/runtime-endpoint": "127.0.0.1:8100",
                },
            },
            "spec": {"unschedulable": unschedulable},
            "status": {
                "allocatable": {"memory": "640Gi"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
    )


def tank_view(name: str = "tank-a", *, status: dict[str, Any] | None = None) -> TankView:
    spec = {
        "site": "s",
        "region": "eu",
        "nodeSelector": {"tokenfleet.io/tank": name},
        "power": {"capacityKW": 100, "safetyMarginPercent": 10},
        "coolant": {
            "maxSupplyTempC": 40,
            "maxReturnTempC": 50,
            "designFlowLitersPerMinute": 300,
            "heatRejectionKW": 120,
        },
        "telemetry": {
            "source": "Redfish",
            "redfish": {"endpoint": "http://127.0.0.1:1", "unitId": name},
            "staleAfterSeconds": 60,
        },
    }
    st = {
        "itLoadKW": 5.0,
        "supplyTempC": 30.0,
        "returnTempC": 38.0,
        "flowLitersPerMinute": 300.0,
        "leakState": "OK",
        "lastReadingTime": rfc(NOW),
    }
    st.update(status or {})
    return TankView(name=name, uid=uid(name), generation=1, spec=spec, status=st)


def pool_view(name: str = "pool-a") -> PoolView:
    spec = {
        "nodeSelector": {"tokenfleet.io/pool": name},
        "region": "eu",
        "ownership": "fleet-ops",
        "battery": {"minStateOfChargePercent": 30, "targetStateOfChargePercent": 80},
    }
    return PoolView(name=name, uid=uid(name), generation=1, spec=spec, status={})


INT4 = {
    "name": "int4",
    "precision": "INT4",
    "memoryMiB": 6000,
    "tokensPerSecond": 20,
    "watts": 60,
    "targets": ["Vehicle"],
}
FP16 = {
    "name": "fp16",
    "precision": "FP16",
    "memoryMiB": 16000,
    "tokensPerSecond": 40,
    "watts": 700,
    "targets": ["Rack"],
}


def job_view(
    name: str = "chat",
    *,
    variants: list[dict[str, Any]] | None = None,
    replicas: tuple[int, int] = (1, 2),
    target: float = 40,
    placements: tuple[dict[str, Any], ...] = (),
    generation: int = 1,
    spec_patch: dict[str, Any] | None = None,
) -> JobView:
    spec: dict[str, Any] = {
        "model": {"name": "tinyllama", "repositoryUri": "s3://m/tinyllama"},
        "variants": variants or [INT4],
        "throughput": {"targetTokensPerSecond": target},
        "replicas": {"min": replicas[0], "max": replicas[1]},
    }
    spec.update(spec_patch or {})
    return JobView(
        namespace="ns",
        name=name,
        uid=uid(name),
        generation=generation,
        spec=spec,
        placements=placements,
    )
