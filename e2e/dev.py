"""`make dev`: the local fleet, end to end, on 127.0.0.1, alive.

1. the real control plane with the simulated fleet (`make cluster-up`'s code path; reused when
   already running, and left running on exit — `make cluster-down` stops it);
2. the CRDs and the runtime DaemonSet (fake kwok pod addresses for the EndpointSlices);
3. real tritonservers on loopback, each mapped to a kwok rack or vehicle node with the
   ``tokenfleet.io/runtime-endpoint`` annotation (racks of one tank, cars of one pool);
4. a Redfish-shaped tank simulator for that tank, an ImmersionPod and a VehiclePool for them;
5. an InferenceJob with an FP16 rack variant and an INT4 car variant;
6. the OpenAI-compatible gateway on 127.0.0.1 (``--gateway-port``, default 8088) with a dev API
   key (Secret ``dev-api-key``: ``sk-tokenfleet-dev``) and the live view (``/live``);
7. the living fleet: ``tokenfleet devfleet`` runs the fleetsim car/tank/site models at
   ``--scale`` (default 60: a virtual hour per wall minute): cars arrive, charge, depart and come
   back, tanks warm with their load, the site cap drops for demand response. The cars with a
   runtime publish through real ``tokenfleet agent`` processes (one each); the bulk of the fleet
   through the same agent code in the driver's process;
8. a load generator (2 openai-client threads) through the gateway, so tokens/s are real;
9. the operator itself, its log in the foreground; one ready banner says where everything is;
10. batch inference (:mod:`e2e.dev_batch`): the object store (SeaweedFS S3 on 127.0.0.1), the
   gateway's ``/v1/files`` and ``/v1/batches``, ``tokenfleet dispatcher`` and a sample
   InferenceBatch (``kubectl get infbatch``).

Ctrl-C (or SIGTERM, SIGHUP, a closed pipe) stops everything it started and removes what it
created, finalizers included. A run that was SIGKILLed is cleaned up by the next one (its
processes are recorded in ``STATE_DIR/dev-run.json``; its objects carry the dev rig's label).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from e2e import dev_procs
from e2e.cluster.fleet import DEFAULT_STATE_DIR, REPO, Fleet, FleetError

T_START = time.monotonic()
DEV_RIG = "dev"
DEV_API_KEY = "sk-tokenfleet-dev"
DEV_JOB = "tinyllama"
RUN_FILE = "dev-run.json"


class Out:
    """stdout that survives a closed pipe (``make dev | head``): after the first failed write
    everything goes to the dev log only, and the cleanup still runs."""

    def __init__(self) -> None:
        self.broken = False
        self.log: Any = None

    def __call__(self, message: str) -> None:
        line = f">> {message}"
        if self.log is not None:
            with contextlib.suppress(OSError, ValueError):
                self.log.write(line + "\n")
                self.log.flush()
        if self.broken:
            return
        try:
            print(line, flush=True)
        except (BrokenPipeError, OSError, ValueError):
            self.broken = True
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.dup2(devnull, sys.stderr.fileno())


log = Out()


class Stop(Exception):
    """A signal asked the dev fleet to stop."""


def _raise_stop(signum: int, _frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


# ---------------------------------------------------------------------------- a previous run


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def reap_previous_run(state_dir: Path) -> None:
    """Stop what a previous ``make dev`` left running (it was SIGKILLed, or is still up): only
    the processes it recorded, and only while their command line is still the recorded one."""
    path = state_dir / RUN_FILE
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    main = recorded.get("pid")
    if isinstance(main, int) and main != os.getpid() and "e2e.dev" in _cmdline(main):
        log(f"a previous make dev (pid {main}) is still running: stopping it first")
        with contextlib.suppress(ProcessLookupError):
            os.kill(main, signal.SIGTERM)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and "e2e.dev" in _cmdline(main):
            time.sleep(0.3)
    stale = [
        (int(c["pid"]), str(c["cmdline"]))
        for c in recorded.get("children") or ()
        if c.get("cmdline") and _cmdline(int(c["pid"])) == c["cmdline"]
    ]
    if stale:
        log(f"stopping {len(stale)} processes left by a previous make dev")
    for pid, _ in stale:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_cmdline(p) == c for p, c in stale):
        time.sleep(0.2)
    for pid, cmd in stale:
        if _cmdline(pid) == cmd:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        path.unlink()


def settled_cmdline(pid: int, timeout: float = 5.0) -> str:
    """The command line of a process that may have just been started: right after ``Popen``
    returns, the child's exec may not have set up its new argv yet and /proc/PID/cmdline reads
    empty (2 reads in 60 here). Such a child was once left out of the record, and a SIGKILLed run's
    ``tokenfleet agent`` (the last one started) outlived every later cleanup."""
    deadline = time.monotonic() + timeout
    while not (cmd := _cmdline(pid)) and time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return ""
        time.sleep(0.01)
    return cmd


def record_run(state_dir: Path, pids: Sequence[int]) -> None:
    children = [{"pid": p, "cmdline": settled_cmdline(p)} for p in pids]
    doc = {"pid": os.getpid(), "children": [c for c in children if c["cmdline"]]}
    tmp = state_dir / f".{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, state_dir / RUN_FILE)


# ---------------------------------------------------------------------------- the fleet


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


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m e2e.dev", description=__doc__)
    env = os.environ.get
    parser.add_argument("--vehicles", type=int, default=int(env("VEHICLES", 200)))
    parser.add_argument("--pools", type=int, default=int(env("POOLS", 2)))
    parser.add_argument("--racks", type=int, default=int(env("RACKS", 16)))
    parser.add_argument("--tanks", type=int, default=int(env("TANKS", 2)))
    parser.add_argument("--runtimes", type=int, default=int(env("RUNTIMES", 6)), help="tritons")
    parser.add_argument("--scale", type=float, default=float(env("SCALE", 60)), help="x real time")
    parser.add_argument(
        "--bulk",
        action=argparse.BooleanOptionalAction,
        default=env("BULK", "1") != "0",
        help="also drive every other car of the simulated fleet (in-process agents)",
    )
    parser.add_argument("--load-workers", type=int, default=int(env("LOAD_WORKERS", 2)))
    parser.add_argument("--namespace", default="default")
    parser.add_argument(
        "--watch-namespace-only",
        action="store_true",
        help="the operator watches --namespace only (default: all namespaces)",
    )
    parser.add_argument("--gateway-port", type=int, default=int(env("GATEWAY_PORT", 8088)))
    parser.add_argument("--metrics-port", type=int, default=int(env("METRICS_PORT", 9090)))
    # examples/dev/immersionpod-dev-tank.yaml names this port
    parser.add_argument("--tank-port", type=int, default=int(env("TANK_PORT", 8089)))
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    args = parser.parse_args(argv)
    if args.runtimes < 4:
        parser.error("--runtimes must be at least 4 (one rack, three cars)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    racks = max(1, args.runtimes // 3)
    cars = args.runtimes - racks

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_stop)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    reap_previous_run(args.state_dir)
    # what an earlier run started and never recorded, then mark this run's children
    left = dev_procs.sweep(dev_procs.of_state_dir(args.state_dir))
    if left:
        log(f"stopped {len(left)} unrecorded processes of an earlier make dev: {left}")
    dev_procs.mark(args.state_dir)

    from e2e.dev_batch import DevBatch
    from e2e.dev_examples import DevExamples
    from e2e.gateway_kit import GatewayProcess, Load, create_api_key
    from e2e.operator_kit import TEST_ENV, TOKENFLEET, Rig, free_port, wait_for
    from e2e.runtime.repository import DEFAULT_MODELS
    from tokenfleet.devfleet.model import DevFleetConfig, pool_battery_kwh

    tmp = Path(tempfile.mkdtemp(prefix="tokenfleet-dev-"))
    log.log = (tmp / "dev.log").open("a")
    procs: list[subprocess.Popen[bytes]] = []
    rig: Rig | None = None
    load: Load | None = None
    gateway: GatewayProcess | None = None
    fleet: Fleet | None = None
    batch = DevBatch(args.namespace, tmp, all_namespaces=not args.watch_namespace_only, log=log)
    code = 0
    try:
        fleet = control_plane(args)
        rig = Rig(fleet, args.namespace, tmp, owns_namespace=False)  # others may use it
        rig.id, rig.region, rig.owner = DEV_RIG, f"region-{DEV_RIG}", f"owner-{DEV_RIG}"
        remove_dev_objects(rig)
        log(f"starting {args.runtimes} tritonservers on 127.0.0.1 ({', '.join(DEFAULT_MODELS)})")
        rig.start_tritons(args.runtimes, list(DEFAULT_MODELS))
        record_run(args.state_dir, [s.process.pid for s in rig.tritons.servers if s.process])
        rig.start_sim([], port=args.tank_port)
        batch.start_store()
        # the dev tank and pool are examples/dev/'s (see e2e/dev_examples.py)
        examples = DevExamples(
            rig,
            # see tokenfleet.devfleet.model: the battery at the time scale
            battery_kwh=pool_battery_kwh(DevFleetConfig(scale=args.scale)),
            drain_lead_seconds=max(5, int(1200 / args.scale)),  # 20 virtual minutes
            log=log,
        )
        tank = examples.create_tank()
        pool = examples.create_pool()
        for i in range(racks):
            rig.add_rack(f"rack-{i}", i, tank)
        for j in range(cars):
            rig.add_vehicle(f"car-{j}", racks + j, pool)
        rig.wait_runtime_pods()
        # the operator, its log in the foreground
        run_env = {**os.environ, **fleet.env(), **TEST_ENV, "TOKENFLEET_DRAIN_SECONDS": "1"}
        scope = (
            ["--namespace", args.namespace] if args.watch_namespace_only else ["--all-namespaces"]
        )
        liveness = free_port()
        operator_argv = [
            str(TOKENFLEET), "run", *scope, "--log-format", "plain",
            "--metrics-address", "127.0.0.1", "--metrics-port", str(args.metrics_port),
            "--liveness", f"http://127.0.0.1:{liveness}/healthz",
        ]  # fmt: skip
        dev_procs.spawn(procs, operator_argv, env=run_env)

        # the gateway with the live view
        with contextlib.suppress(Exception):
            rig.core.delete_namespaced_secret("dev-api-key", args.namespace)
        create_api_key(rig.core, args.namespace, "dev-api-key", DEV_API_KEY)
        gateway = GatewayProcess(
            {**fleet.env(), **batch.gateway_env()},
            tmp / "gateway.log",
            extra_args=["--live-view"],
        )
        gateway.port = args.gateway_port
        gateway.start()
        batch.start_dispatcher(rig.core, run_env)

        # the living fleet: the driver, and one real agent per car with a runtime
        agents_dir = tmp / "agents"
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        kubeconfig = str(fleet.kubeconfig)
        driver_argv = [
            str(TOKENFLEET), "devfleet", "--kubeconfig", kubeconfig,
            "--cars", "tokenfleet.io/role=vehicle" if args.bulk else f"tokenfleet.io/pool={pool}",
            "--agent-dir", str(agents_dir), "--tank", tank, "--scale", str(args.scale),
        ]  # fmt: skip
        dev_procs.spawn(procs, driver_argv, env=run_env)
        cars_nodes = [n for n in rig.nodes if n.startswith("car-")]
        start_agents(procs, cars_nodes, kubeconfig, agents_dir, run_env, tmp)
        assert rig.tritons is not None
        record_run(
            args.state_dir,
            [*(s.process.pid for s in rig.tritons.servers if s.process), gateway.process.pid]  # type: ignore[union-attr]
            + [p.pid for p in procs]
            + batch.pids(),
        )

        # the job comes once every dev car speaks for itself (its agent published the
        # simulator's state): a plan made on the enrolment's placeholder telemetry would move
        # replicas at once
        dev_cars = [n for n in rig.nodes if n.startswith("car-")]

        def cars_published() -> bool:
            observed = [
                (rig.core.read_node(n).metadata.annotations or {}).get(  # type: ignore[union-attr]
                    "telemetry.tokenfleet.io/observed-at", ""
                )
                for n in dev_cars
            ]
            return all(o >= since for o in observed)

        wait_for(cars_published, 120, "the dev cars' agents to publish", interval=0.5)
        # the rack target alone is met by the racks; a car share keeps replicas on cars
        car_replicas = cars - 2
        rig.create_job(
            DEV_JOB,
            [
                {"name": "fp16", "precision": "FP16", "memoryMiB": 4096,
                 "tokensPerSecond": 400, "watts": 300, "targets": ["Rack"]},
                {"name": "int4", "precision": "INT4", "memoryMiB": 1024,
                 "tokensPerSecond": 40, "watts": 45, "targets": ["Vehicle"]},
            ],
            replicas=(racks + car_replicas, racks + car_replicas),
            target_tps=400 * racks + 40 * car_replicas,
            preference="PreferVehicle",
        )  # fmt: skip
        log(f"ImmersionPod {tank}, VehiclePool {pool}, InferenceJob {args.namespace}/{DEV_JOB}")

        def job_ready() -> bool:
            conds = {c["type"]: c for c in rig.status(DEV_JOB).get("conditions") or ()}  # type: ignore[union-attr]
            return conds.get("Ready", {}).get("status") == "True"

        wait_for(job_ready, 180, f"InferenceJob {DEV_JOB} Ready", interval=0.5)
        batch.submit_sample(rig.custom, DEV_JOB)
        apply_examples(examples)
        load = Load(
            base_url=gateway.url,
            api_key=DEV_API_KEY,
            models=(DEV_JOB,),
            workers=args.load_workers,
            max_tokens=16,
        )
        load.__enter__()
        banner(
            args, fleet, gateway.url, tank, pool, time.monotonic() - T_START, tmp,
            batch.banner_lines(gateway.url, DEV_API_KEY, DEV_JOB),
        )  # fmt: skip
        while all(p.poll() is None for p in procs) and batch.dead() is None:
            time.sleep(0.5)
        dead = next((p for p in procs if p.poll() is not None), None)
        if dead is None:
            log(f"{batch.dead()} exited; stopping")
        else:
            log(f"{' '.join(map(str, dead.args[:2]))} exited ({dead.returncode}); stopping")  # type: ignore[index]
        code = 1
    except Stop as stop:
        log(f"{stop}: stopping the dev fleet")
    except FleetError as error:
        log(f"{error}")
        code = 2
    finally:
        shutdown(args, procs, load, gateway, rig, fleet, batch)
    return code


def apply_examples(examples: Any) -> None:
    """examples/dev/'s InferenceJobs, once the dev job is Ready; says which are not Ready."""
    names = examples.apply_jobs()
    log(f"applied examples/dev/: InferenceJobs {', '.join(names)}")
    for name, why in examples.wait_ready(120).items():
        log(f"example InferenceJob {name} is not Ready yet ({why})")


def start_agents(
    procs: list[subprocess.Popen[bytes]],
    nodes: Sequence[str],
    kubeconfig: str,
    agents_dir: Path,
    env: dict[str, str],
    tmp: Path,
) -> None:
    """One real ``tokenfleet agent`` per dev car, publishing the driver's JSON source; each is
    in ``procs`` as soon as it runs (a stop in between would leave it running otherwise)."""
    from e2e.operator_kit import TOKENFLEET

    for node in nodes:
        agent_argv = [
            str(TOKENFLEET), "agent", "--node", node, "--kubeconfig", kubeconfig,
            "--source", f"json:{agents_dir / node}.json", "--interval", "1",
            "--heartbeat", "30",
        ]  # fmt: skip
        dev_procs.spawn(
            procs,
            agent_argv,
            env=env,
            stdout=(tmp / f"agent-{node}.log").open("ab"),
            stderr=subprocess.STDOUT,
        )


def shutdown(
    args: argparse.Namespace,
    procs: list[subprocess.Popen[bytes]],
    load: Any,
    gateway: Any,
    rig: Any,
    fleet: Fleet | None,
    batch: Any = None,
) -> None:
    """Stop what a dev run started (every stop path ends here): the load, the processes, the
    gateway, the rig's objects and runtimes, the run file."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the cleanup runs to its end
    if batch is not None and rig is not None:  # the batches first, while the dispatcher runs
        log("removing the dev batches; stopping the dispatcher and the object store")
        batch.stop(rig.custom, rig.core, DEV_JOB)
    if load is not None:
        threading.Thread(target=load.__exit__, args=(None, None, None), daemon=True).start()
    for p in reversed(procs):  # agents, driver, then the operator
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    for p in reversed(procs):
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
    if gateway is not None:
        gateway.stop()
    if rig is not None:
        log("removing the dev rig (job, pool, tank, nodes, API key) and the runtimes")
        with contextlib.suppress(Exception):
            rig.core.delete_namespaced_secret("dev-api-key", args.namespace)
        try:
            rig.cleanup()
        except Exception as error:  # the API went away (make cluster-down): say so, go on
            log(f"could not remove everything ({type(error).__name__}); the next make dev will")
            if rig.tritons is not None:
                with contextlib.suppress(Exception):
                    rig.tritons.stop()
        with contextlib.suppress(Exception):  # finalizers, pods kwok left, and wait
            remove_dev_objects(rig, quiet=True)
    # anything this run started that is still up (it should not be): its mark says so
    mine = dev_procs.mark_value(args.state_dir)
    left = dev_procs.sweep(lambda value: value == mine)
    if left:
        log(f"stopped {len(left)} processes that outlived the cleanup: {left}")
    with contextlib.suppress(OSError):
        (args.state_dir / RUN_FILE).unlink()
    log(f"stopped; the control plane is still up ({fleet.kubeconfig if fleet else '-'}):"
        " make cluster-down stops it")  # fmt: skip


def remove_dev_objects(rig: Any, *, wait: bool = True, quiet: bool = False) -> None:
    """Remove what a dev rig (this one or a killed earlier one) created: InferenceJobs of the
    dev namespace that are ours, the dev tank and pool, the dev nodes; finalizers first (no
    operator may be left to remove them). Waits for the names to be free when ``wait``."""
    from kubernetes.client.exceptions import ApiException

    from e2e.operator_kit import GROUP, RIG_LABEL, VERSION

    custom, core = rig.custom, rig.core
    no_finalizers = {"metadata": {"finalizers": None}}
    merge = "application/merge-patch+json"
    gone: list[Any] = []
    from e2e.dev_batch import SECRET, remove_dev_batches

    with contextlib.suppress(ApiException):  # no dispatcher runs now: finalizers go at once
        remove_dev_batches(custom, rig.namespace, DEV_JOB, timeout=0)
    with contextlib.suppress(ApiException):
        core.delete_namespaced_secret(SECRET, rig.namespace)
    with contextlib.suppress(ApiException):
        job = custom.get_namespaced_custom_object(
            GROUP, VERSION, rig.namespace, "inferencejobs", DEV_JOB
        )
        if (job.get("spec", {}).get("placement", {}).get("regions") or [None])[0] == rig.region:
            with contextlib.suppress(ApiException):
                custom.patch_namespaced_custom_object(
                    GROUP, VERSION, rig.namespace, "inferencejobs", DEV_JOB, no_finalizers,
                    _content_type=merge,
                )  # fmt: skip
            with contextlib.suppress(ApiException):
                custom.delete_namespaced_custom_object(
                    GROUP, VERSION, rig.namespace, "inferencejobs", DEV_JOB
                )
            gone.append(
                lambda: custom.get_namespaced_custom_object(
                    GROUP, VERSION, rig.namespace, "inferencejobs", DEV_JOB
                )
            )
    from e2e.dev_examples import remove_labelled_jobs

    for name in remove_labelled_jobs(custom, rig.namespace, f"{RIG_LABEL}={DEV_RIG}"):
        gone.append(
            lambda n=name: custom.get_namespaced_custom_object(
                GROUP, VERSION, rig.namespace, "inferencejobs", n
            )
        )
    for plural in ("immersionpods", "vehiclepools"):
        items = custom.list_cluster_custom_object(GROUP, VERSION, plural)["items"]
        for obj in items:
            name = obj["metadata"]["name"]
            if not name.endswith(f"-{DEV_RIG}"):
                continue
            with contextlib.suppress(ApiException):
                custom.patch_cluster_custom_object(
                    GROUP, VERSION, plural, name, no_finalizers, _content_type=merge
                )
            with contextlib.suppress(ApiException):
                custom.delete_cluster_custom_object(GROUP, VERSION, plural, name)
            gone.append(
                lambda p=plural, n=name: custom.get_cluster_custom_object(GROUP, VERSION, p, n)
            )
    from kubernetes import client

    from e2e.operator_kit import RUNTIME_NS

    apps = client.AppsV1Api(rig.api)
    daemonset = f"runtime-{DEV_RIG}"
    with contextlib.suppress(ApiException):
        apps.delete_namespaced_daemon_set(daemonset, RUNTIME_NS)
        gone.append(lambda: apps.read_namespaced_daemon_set(daemonset, RUNTIME_NS))
    # kwok does not finish the pods of a deleted node: remove them at once
    selector = f"{RIG_LABEL}={DEV_RIG}"
    for pod in core.list_namespaced_pod(RUNTIME_NS, label_selector=selector).items:
        with contextlib.suppress(ApiException):
            core.delete_namespaced_pod(pod.metadata.name, RUNTIME_NS, grace_period_seconds=0)
    for node in core.list_node(label_selector=f"{RIG_LABEL}={DEV_RIG}").items:
        name = node.metadata.name
        with contextlib.suppress(ApiException):
            core.delete_node(name)
        gone.append(lambda n=name: core.read_node(n))
    if not wait or not gone:
        return
    if not quiet:
        log(f"removed {len(gone)} objects left by an earlier make dev")
    deadline = time.monotonic() + 30
    for read in gone:
        while time.monotonic() < deadline:
            try:
                read()
            except ApiException as exc:
                if exc.status == 404:
                    break
                raise
            time.sleep(0.2)


def banner(
    args: argparse.Namespace,
    fleet: Fleet,
    gateway_url: str,
    tank: str,
    pool: str,
    elapsed: float,
    tmp: Path,
    batch_lines: Sequence[str] = (),
) -> None:
    base = gateway_url.removesuffix("/v1")
    kubectl = REPO / ".bin" / "kubectl"
    ns = args.namespace
    lines = [
        "",
        "=" * 78,
        f"tokenfleet dev fleet is READY (in {elapsed:.1f} s): InferenceJob {ns}/{DEV_JOB} serves",
        "=" * 78,
        f"live view    {base}/live     (tanks, pools, replicas, moves, tokens/s)",
        f"OpenAI API   {gateway_url}   (API key {DEV_API_KEY}, model {DEV_JOB})",
        f"metrics      http://127.0.0.1:{args.metrics_port}/metrics (operator),"
        f" {base}/metrics (gateway)",
        f"fleet        {args.scale:g}x real time: a virtual hour per {3600 / args.scale:.0f} s;"
        f" tank {tank}, pool {pool}",
        "",
        "kubectl      (use the one in .bin/; a system kubectl may be missing or too old)",
        f"  export KUBECONFIG={fleet.kubeconfig}",
        f"  alias kubectl={kubectl}",
        "  kubectl get tokenfleet -A -o wide   # with examples/dev/'s jobs",
        f"  kubectl describe infjob {DEV_JOB}      # Events: placements and moves",
        "",
        "curl",
        f"  curl -s {gateway_url}/chat/completions -H 'Authorization: Bearer {DEV_API_KEY}' \\",
        "    -H 'Content-Type: application/json' \\",
        f'    -d \'{{"model": "{DEV_JOB}", "messages": [{{"role": "user", "content": "hello"}}],'
        ' "max_tokens": 16}\'',
        "openai (Python)",
        f'  OpenAI(base_url="{gateway_url}", api_key="{DEV_API_KEY}")'
        f'.chat.completions.create(model="{DEV_JOB}", messages=[...])',
        "",
        *batch_lines,
        "",
        f"logs         {tmp} (gateway, dispatcher, agents, objstore, dev.log)",
        "stop         Ctrl-C (removes the dev job, tank, pool and nodes)",
        "stop all     make cluster-down (the control plane keeps running after Ctrl-C)",
        "=" * 78,
        "",
    ]
    for line in lines:
        log(line)


if __name__ == "__main__":
    sys.exit(main())
