"""Benchmark: status writes per minute per tank and per pool with the fleet at rest.

Runs against the real local fleet (kube-apiserver + KCM + scheduler + kwok from e2e/cluster, real
``tritonserver`` processes from e2e/runtime, the Redfish tank simulator, the operator as
``tokenfleet run`` with its production intervals), so it needs ``make cluster-build`` and
``make triton-venv``. Prints one JSON document.

The fleet: ``--tanks`` ImmersionPods (Redfish, polled every 15 s, stale after 60 s: the API
defaults) with one rack each, ``--pools`` VehiclePools with two cars each, and one job serving a
replica on a rack. Once the job is Ready and two VehiclePool status periods have passed, every
change of the tanks' and pools' ``resourceVersion`` is counted from a watch for ``--window``
seconds (default 300, the issue's 5 minutes) while nothing changes: each is one write of that
object (a patch that changes nothing does not bump it). Reported per object and per minute.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from e2e.cluster.fleet import Fleet  # noqa: E402
from e2e.operator_kit import GROUP, RACK_FP16, RACK_MODEL, VERSION, OperatorProcess, Rig  # noqa: E402
from kubernetes import watch  # noqa: E402

from tokenfleet.controllers.vehiclepool import INTERVAL_SECONDS as POOL_STATUS_INTERVAL_SECONDS  # noqa: E402


def _count_writes(
    rig: Rig, plural: str, names: set[str], seconds: float, out: dict[str, int]
) -> None:
    """Count resourceVersion changes of ``names`` (cluster-scoped ``plural``) for ``seconds``."""
    listing = rig.custom.list_cluster_custom_object(GROUP, VERSION, plural)
    version = listing["metadata"]["resourceVersion"]
    seen = {
        o["metadata"]["name"]: o["metadata"]["resourceVersion"]
        for o in listing["items"]
        if o["metadata"]["name"] in names
    }
    for name in names:
        out.setdefault(name, 0)
    deadline = time.monotonic() + seconds
    w = watch.Watch()
    while (left := deadline - time.monotonic()) > 0:
        for event in w.stream(
            rig.custom.list_cluster_custom_object,
            GROUP,
            VERSION,
            plural,
            resource_version=version,
            timeout_seconds=max(1, int(left)),
        ):
            obj = event["object"]
            meta = obj["metadata"]
            version = meta["resourceVersion"]
            name = meta["name"]
            if name in names and event["type"] == "MODIFIED" and seen.get(name) != version:
                seen[name] = version
                out[name] += 1
            if time.monotonic() >= deadline:
                w.stop()
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tanks", type=int, default=2)
    parser.add_argument("--pools", type=int, default=2)
    parser.add_argument("--window", type=float, default=300.0, help="seconds at rest measured")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="tokenfleet-bench-"))
    fleet = Fleet(
        work / "fleet",
        vehicles=0,
        pools=1,
        racks=0,
        tanks=1,
        die_with_parent=True,
        log=lambda m: print(f">> {m}", file=sys.stderr, flush=True),
    )
    fleet.start()
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    rig: Rig | None = None
    op: OperatorProcess | None = None
    try:
        fleet.core_v1().create_namespace({"metadata": {"name": namespace}})
        rig = Rig(fleet, namespace, work)
        rig.start_tritons(2, [RACK_MODEL])
        tanks = [f"tank{i}" for i in range(args.tanks)]
        rig.start_sim([])
        tank_names = [
            rig.create_tank(t, telemetry={"pollIntervalSeconds": 15, "staleAfterSeconds": 60})
            for t in tanks
        ]
        for i, tank in enumerate(tank_names):
            rig.add_rack(f"rack{i}", i % 2, tank)
        pool_names = [rig.create_pool(f"pool{i}") for i in range(args.pools)]
        for i, pool in enumerate(pool_names):
            for j in range(2):
                rig.add_vehicle(f"car{i}-{j}", j % 2, pool)
        rig.wait_runtime_pods()
        op = OperatorProcess(
            fleet,
            [namespace],
            work / "operator.log",
            env={
                "TOKENFLEET_PLAN_DEBOUNCE_SECONDS": "",
                "TOKENFLEET_PLAN_RESYNC_SECONDS": "",
                "TOKENFLEET_JOB_RESYNC_SECONDS": "",
            },
            verbose=False,
        )
        op.start()
        rig.create_job("bench", [RACK_FP16], replicas=(1, 1), target_tps=40, targets=["Rack"])
        rig.wait_ready("bench", 1)
        time.sleep(2 * POOL_STATUS_INTERVAL_SECONDS + 16)  # first pool and tank writes land

        counts: dict[str, dict[str, int]] = {"immersionpods": {}, "vehiclepools": {}}
        threads = [
            threading.Thread(
                target=_count_writes,
                args=(rig, plural, set(names), args.window, counts[plural]),
                daemon=True,
            )
            for plural, names in (("immersionpods", tank_names), ("vehiclepools", pool_names))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.window + 60)
        minutes = args.window / 60.0

        def per_minute(values: dict[str, int]) -> dict[str, Any]:
            return {
                "writes": dict(values),
                "writes_per_minute": {k: round(v / minutes, 3) for k, v in values.items()},
                "max_writes_per_minute": round(max(values.values(), default=0) / minutes, 3),
            }

        result: dict[str, Any] = {
            "window_seconds": args.window,
            "fleet": {
                "tanks": args.tanks,
                "pools": args.pools,
                "cars_per_pool": 2,
                "racks_per_tank": 1,
                "tank_poll_interval_seconds": 15,
                "tank_stale_after_seconds": 60,
                "jobs": 1,
            },
            "tanks": per_minute(counts["immersionpods"]),
            "pools": per_minute(counts["vehiclepools"]),
        }
        print(json.dumps(result, indent=2))
        return 0
    finally:
        if op is not None:
            op.stop()
        if rig is not None:
            rig.cleanup()
        fleet.stop()


if __name__ == "__main__":
    sys.exit(main())
