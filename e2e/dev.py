"""`make dev`: the local fleet, end to end, on 127.0.0.1.

1. the real control plane with the simulated fleet (`make cluster-up`'s code path; reused when
   already running, and left running on exit — `make cluster-down` stops it);
2. the CRDs and the runtime DaemonSet (fake kwok pod addresses for the EndpointSlices);
3. real tritonservers on loopback, each mapped to a kwok rack or vehicle node with the
   ``tokenfleet.io/runtime-endpoint`` annotation (racks of one tank, vehicles of one pool);
4. a Redfish-shaped tank simulator for that tank, an ImmersionPod and a VehiclePool for them;
5. an InferenceJob with an FP16 rack variant and an INT4 vehicle variant;
6. the OpenAI-compatible gateway on 127.0.0.1 (``--gateway-port``, default 8088) with a dev API
   key (Secret ``dev-api-key``: ``sk-tokenfleet-dev``); its URL and a curl line are printed;
7. the operator itself, in the foreground (Ctrl-C stops the operator, the gateway, the runtimes
   and the simulator; the jobs and nodes it created are removed).

Only the rig's nodes have runtimes; every other node of the simulated fleet is visible to the
pools and tanks selecting it, and reported as having no runtime.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from e2e.cluster.fleet import DEFAULT_STATE_DIR, Fleet, FleetError
from e2e.gateway_kit import GatewayProcess, create_api_key
from e2e.operator_kit import TEST_ENV, TOKENFLEET, Rig
from e2e.runtime.repository import DEFAULT_MODELS


def log(message: str) -> None:
    print(f">> {message}", flush=True)


def control_plane(args: argparse.Namespace) -> Fleet:
    try:
        fleet = Fleet.attach(args.state_dir, log=log)
        if all(fleet.alive().values()):
            log(f"reusing the running control plane in {args.state_dir}")
            return fleet
    except FleetError:
        pass
    log("starting the control plane and the simulated fleet (make cluster-down stops it)")
    return Fleet(
        args.state_dir,
        vehicles=args.vehicles,
        pools=args.pools,
        racks=args.racks,
        tanks=args.tanks,
        log=log,
    ).start()


def build_rig(fleet: Fleet, args: argparse.Namespace, tmp: Path) -> Rig:
    rig = Rig(fleet, args.namespace, tmp)
    racks = max(1, args.runtimes // 2)
    vehicles = max(1, args.runtimes - racks)
    log(f"starting {racks + vehicles} tritonservers on 127.0.0.1 ({', '.join(DEFAULT_MODELS)})")
    rig.start_tritons(racks + vehicles, list(DEFAULT_MODELS))
    rig.start_sim([])
    tank = rig.create_tank("factory-tank")
    pool = rig.create_pool("depot-vans")
    assert rig.sim is not None
    log(f"tank simulator at {rig.sim.url}; ImmersionPod {tank}, VehiclePool {pool}")
    for i in range(racks):
        rig.add_rack(f"rack-{i}", i, tank)
    for j in range(vehicles):
        rig.add_vehicle(f"car-{j}", racks + j, pool)
    for node in rig.nodes:
        log(f"  node {node} -> runtime {rig.endpoint(rig.node_runtime[node])}")
    # the runtime pods (kwok addresses) make the rig's nodes routable in EndpointSlices
    rig.wait_runtime_pods()
    rig.create_job(
        "tinyllama",
        [
            {
                "name": "fp16",
                "precision": "FP16",
                "memoryMiB": 4096,
                "tokensPerSecond": 400,
                "watts": 300,
                "targets": ["Rack"],
            },
            {
                "name": "int4",
                "precision": "INT4",
                "memoryMiB": 1024,
                "tokensPerSecond": 40,
                "watts": 45,
                "targets": ["Vehicle"],
            },
        ],
        replicas=(1, racks + vehicles),
        target_tps=400 * racks + 40 * vehicles,
    )
    log(f"InferenceJob {args.namespace}/tinyllama created")
    return rig


DEV_API_KEY = "sk-tokenfleet-dev"


def start_gateway(fleet: Fleet, rig: Rig, args: argparse.Namespace, tmp: Path) -> GatewayProcess:
    with contextlib.suppress(Exception):  # left over from an earlier make dev
        rig.core.delete_namespaced_secret("dev-api-key", args.namespace)
    create_api_key(rig.core, args.namespace, "dev-api-key", DEV_API_KEY)
    gateway = GatewayProcess(fleet.env(), tmp / "gateway.log", namespaces=(args.namespace,))
    gateway.port = args.gateway_port
    gateway.start()
    log(f"gateway: {gateway.url}  (API key {DEV_API_KEY}; log {tmp / 'gateway.log'})")
    log(
        f"try: curl -s {gateway.url}/chat/completions -H 'Authorization: Bearer {DEV_API_KEY}'"
        ' -H \'Content-Type: application/json\' -d \'{"model": "tinyllama", "messages":'
        ' [{"role": "user", "content": "hello"}], "max_tokens": 16}\''
    )
    return gateway


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.dev", description=__doc__)
    parser.add_argument("--vehicles", type=int, default=int(os.environ.get("VEHICLES", 200)))
    parser.add_argument("--pools", type=int, default=int(os.environ.get("POOLS", 2)))
    parser.add_argument("--racks", type=int, default=int(os.environ.get("RACKS", 16)))
    parser.add_argument("--tanks", type=int, default=int(os.environ.get("TANKS", 2)))
    parser.add_argument(
        "--runtimes", type=int, default=int(os.environ.get("RUNTIMES", 4)), help="tritonservers"
    )
    parser.add_argument("--namespace", default="default")
    parser.add_argument(
        "--gateway-port", type=int, default=int(os.environ.get("GATEWAY_PORT", 8088))
    )
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    args = parser.parse_args(argv)
    if args.runtimes < 2:
        parser.error("--runtimes must be at least 2 (one rack, one vehicle)")

    fleet = control_plane(args)
    with tempfile.TemporaryDirectory(prefix="tokenfleet-dev-") as tmp:
        rig = build_rig(fleet, args, Path(tmp))
        gateway = start_gateway(fleet, rig, args, Path(tmp))
        env = {**fleet.env(), **TEST_ENV}
        argv_run = [str(TOKENFLEET), "run", "--all-namespaces", "--log-format", "plain"]
        argv_run += [
            "--metrics-address",
            "127.0.0.1",
            "--liveness",
            "http://127.0.0.1:8080/healthz",
        ]
        log(f"export KUBECONFIG={fleet.kubeconfig}")
        log("try: kubectl get tokenfleet -A -o wide; kubectl get infjob -w")
        log("the operator runs in the foreground; Ctrl-C stops it and the local runtimes")
        operator = subprocess.Popen(argv_run, env=env)
        try:
            return operator.wait()
        except KeyboardInterrupt:
            operator.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                operator.wait(timeout=20)
            if operator.poll() is None:
                operator.kill()
            return 0
        finally:
            log("removing the dev rig (jobs, pools, tanks, nodes) and stopping the runtimes")
            gateway.stop()
            with contextlib.suppress(Exception):
                rig.core.delete_namespaced_secret("dev-api-key", args.namespace)
            rig.cleanup()


if __name__ == "__main__":
    sys.exit(main())
