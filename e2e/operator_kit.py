"""Test kit for the operator e2e scenarios (e2e/test_operator_*.py).

* :class:`OperatorProcess` — ``.venv/bin/tokenfleet run`` as a subprocess against the fleet's
  kubeconfig, short intervals from ``TOKENFLEET_*`` env vars, JSON logs to a file, liveness and
  metrics on loopback ports;
* :class:`Rig` — one test's slice of the fleet: real tritonservers on 127.0.0.1 (e2e/runtime),
  kwok nodes (vehicles, racks) mapped to them with ``tokenfleet.io/runtime-endpoint``, a Redfish
  tank simulator (e2e/sim/tank.py), VehiclePools/ImmersionPods/InferenceJobs selecting only the
  rig's nodes (its own region and ownership), and the runtime DaemonSet that gives each rig node a
  runtime pod with a fake (kwok) address. Runtime pod addresses are only compared, never dialled;
  inference goes to the annotation endpoints on loopback.

Every wait has a timeout and says what it waited for and what it saw last.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.cluster.fleet import REPO, Fleet, free_port
from e2e.runtime.launcher import TritonFleet
from e2e.sim.tank import TankSimulator, ThreadedTankSimulator
from tokenfleet.controllers.settings import OperatorConfig

T = TypeVar("T")

GROUP = "tokenfleet.io"
VERSION = "v1alpha1"
RUNTIME_NS = "tokenfleet-system"
#: the runtime pod label, as the operator's config spells it (TOKENFLEET_RUNTIME_POD_LABEL)
RUNTIME_LABELS = {OperatorConfig().runtime_label_key: OperatorConfig().runtime_label_value}
RIG_LABEL = "e2e.tokenfleet.io/rig"
TOKENFLEET = REPO / ".venv" / "bin" / "tokenfleet"

#: The scenarios' two variants of the job model ``tinyllama``: an FP16 replica for racks and an
#: INT4 one for cars. Triton serves them as ``tinyllama-fp16`` and ``tinyllama-int4``.
RACK_FP16: dict[str, Any] = {
    "name": "fp16",
    "precision": "FP16",
    "memoryMiB": 16000,
    "tokensPerSecond": 40,
    "watts": 700,
    "targets": ["Rack"],
}
VEHICLE_INT4: dict[str, Any] = {
    "name": "int4",
    "precision": "INT4",
    "memoryMiB": 6000,
    "tokensPerSecond": 20,
    "watts": 60,
    "targets": ["Vehicle"],
}
RACK_MODEL = "tinyllama-fp16"
VEHICLE_MODEL = "tinyllama-int4"

#: operator intervals for tests (seconds): quick to react, still debounced
TEST_ENV = {
    # the rig's runtimes listen on 127.0.0.1; kwok pod addresses must never be dialled
    "TOKENFLEET_RUNTIME_DIAL_NETWORKS": "127.0.0.0/8",
    "TOKENFLEET_PLAN_DEBOUNCE_SECONDS": "0.2",
    "TOKENFLEET_PLAN_RESYNC_SECONDS": "5",
    "TOKENFLEET_JOB_RESYNC_SECONDS": "5",
    "TOKENFLEET_LOAD_TIMEOUT_SECONDS": "30",
    "TOKENFLEET_UNLOAD_TIMEOUT_SECONDS": "15",
    "TOKENFLEET_TRITON_REQUEST_TIMEOUT_SECONDS": "3",
    "TOKENFLEET_RUNTIME_FAILURE_BACKOFF_SECONDS": "30",
    "TOKENFLEET_REPLACEMENT_TIMEOUT_SECONDS": "60",
    "TOKENFLEET_WATCH_SERVER_TIMEOUT_SECONDS": "60",
    "TOKENFLEET_WATCH_CLIENT_TIMEOUT_SECONDS": "70",
}


def wait_for(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    interval: float = 0.2,
    describe: Callable[[], Any] | None = None,
) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` and the last
    state (``describe()``, else the last value) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except (ApiException, urllib.error.URLError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            seen = describe() if describe is not None else last
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; saw: {seen}")
        time.sleep(interval)


def sum_metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` in Prometheus ``text`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += float(sample.value)
    return total


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a process's log file."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------- the operator


class OperatorProcess:
    """``tokenfleet run`` as a child process (its own session, so SIGKILL takes it all)."""

    def __init__(
        self,
        fleet: Fleet,
        namespaces: list[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        verbose: bool = True,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.fleet = fleet
        self.extra_args = list(extra_args)
        self.verbose = verbose
        self.namespaces = namespaces
        self.log_path = log_path
        self.env = {**fleet.env(), **TEST_ENV, **(env or {})}
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def argv(self) -> list[str]:
        args = [str(TOKENFLEET), "run"]
        for ns in self.namespaces:
            args += ["--namespace", ns]
        return [
            *args,
            "--metrics-port",
            str(self.metrics_port),
            "--metrics-address",
            "127.0.0.1",
            "--liveness",
            f"http://127.0.0.1:{self.liveness_port}/healthz",
            "--log-format",
            "json",
            *(["--verbose"] if self.verbose else []),
            *self.extra_args,
        ]

    def start(self, timeout: float = 60) -> OperatorProcess:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n==== start #{self.starts} {datetime.now(UTC).isoformat()}\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=str(REPO),
            start_new_session=True,
        )
        log.close()
        wait_for(
            self.healthy,
            timeout,
            "the operator's liveness endpoint",
            interval=0.3,
            describe=lambda: self.log_tail(30),
        )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def healthy(self) -> bool:
        if not self.alive():
            raise AssertionError(f"operator exited ({self.returncode}):\n{self.log_tail(40)}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2
            ) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def metrics_text(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as r:
            return str(r.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        return sum_metric(self.metrics_text(), name, **labels)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def log_records(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    out.append(json.loads(line))
        return out


# ---------------------------------------------------------------------------- cluster setup

_setup_lock = threading.Lock()
_setup_done: set[str] = set()


def install_crds(fleet: Fleet) -> None:
    with _setup_lock:
        if f"crds:{fleet.server}" in _setup_done:
            return
        fleet.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        for plural in ("immersionpods", "vehiclepools", "inferencejobs", "inferencebatches"):
            fleet.kubectl(
                "wait", "--for=condition=Established", f"crd/{plural}.{GROUP}", "--timeout=60s"
            )
        _setup_done.add(f"crds:{fleet.server}")


def ensure_runtime_namespace(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    try:
        core.create_namespace({"metadata": {"name": RUNTIME_NS}})
    except ApiException as exc:
        if exc.status != 409:
            raise


def runtime_daemonset(rig_id: str) -> dict[str, Any]:
    """A runtime DaemonSet for one rig's nodes (kwok 'runs' its pods and hands out fake IPs)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": f"runtime-{rig_id}", "namespace": RUNTIME_NS},
        "spec": {
            "selector": {"matchLabels": {**RUNTIME_LABELS, RIG_LABEL: rig_id}},
            "template": {
                "metadata": {
                    "labels": {
                        **RUNTIME_LABELS,
                        RIG_LABEL: rig_id,
                        "app.kubernetes.io/component": "runtime",
                    }
                },
                "spec": {
                    "nodeSelector": {RIG_LABEL: rig_id},
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [
                        {
                            "name": "tritonserver",
                            "image": "nvcr.io/nvidia/tritonserver:24.10-py3",
                            "ports": [{"name": "http", "containerPort": 8000}],
                        }
                    ],
                },
            },
        },
    }


# ---------------------------------------------------------------------------- the rig

HEALTHY_VEHICLE = {
    "soc-percent": "80",
    "plugged-in": "true",
    "charger-power-kw": "11",
    "battery-temp-c": "25",
    "compute-temp-c": "45",
    "target-soc-percent": "80",
    "bandwidth-mbps": "200",
}


class Rig:
    """One test's nodes, runtimes, tanks, pools and jobs (see the module docstring).

    ``owns_namespace``: the namespace is the rig's alone (a test's), so :meth:`cleanup` removes
    every InferenceJob in it; ``False`` (``make dev`` in a namespace people share) removes only
    the jobs recorded in :attr:`jobs` (those :meth:`create_job` made, and any a caller adds)."""

    def __init__(
        self, fleet: Fleet, namespace: str, tmp: Path, *, owns_namespace: bool = True
    ) -> None:
        self.fleet = fleet
        self.namespace = namespace
        self.owns_namespace = owns_namespace
        self.jobs: list[str] = []
        self.tmp = tmp
        self.id = uuid.uuid4().hex[:6]
        self.region = f"region-{self.id}"
        self.owner = f"owner-{self.id}"
        self.api = fleet.api_client()
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.discovery = client.DiscoveryV1Api(self.api)
        self.tritons: TritonFleet | None = None
        self.node_runtime: dict[str, int] = {}
        self.nodes: list[str] = []
        self.cluster_objects: list[tuple[str, str]] = []
        self._sim_ctx: ThreadedTankSimulator | None = None
        self.sim: TankSimulator | None = None
        install_crds(fleet)
        ensure_runtime_namespace(self.api)
        self.daemonset: str | None = None

    # ---- runtimes and tanks ------------------------------------------------------------------

    def start_tritons(self, count: int, models: list[str]) -> TritonFleet:
        self.tritons = TritonFleet(count, models=models).start(timeout=90)
        return self.tritons

    def endpoint(self, index: int) -> str:
        assert self.tritons is not None
        return str(self.tritons[index].http_endpoint)

    def start_sim(self, tanks: list[str], *, port: int = 0) -> TankSimulator:
        self._sim_ctx = ThreadedTankSimulator(tanks, port=port)
        self.sim = self._sim_ctx.__enter__()
        return self.sim

    # ---- nodes -------------------------------------------------------------------------------

    def name(self, base: str) -> str:
        return f"{base}-{self.id}"

    def _rig_labels(self) -> dict[str, str]:
        return {RIG_LABEL: self.id}

    def add_vehicle(
        self,
        base: str,
        runtime: int,
        pool: str,
        *,
        memory: str = "32Gi",
        telemetry: Mapping[str, str] | None = None,
    ) -> str:
        name = self.name(base)
        values = dict(HEALTHY_VEHICLE)
        values["departure-time"] = rfc3339(datetime.now(UTC) + timedelta(hours=8))
        values["observed-at"] = rfc3339(datetime.now(UTC))
        values.update(telemetry or {})
        self.fleet.add_vehicle(
            name,
            pool=pool,
            region=self.region,
            memory=memory,
            telemetry=values,
            labels=self._rig_labels(),
            annotations={"tokenfleet.io/runtime-endpoint": self.endpoint(runtime)},
        )
        self.nodes.append(name)
        self.node_runtime[name] = runtime
        return name

    def add_rack(self, base: str, runtime: int, tank: str, *, memory: str = "640Gi") -> str:
        name = self.name(base)
        self.fleet.add_rack(
            name,
            tank=tank,
            region=self.region,
            memory=memory,
            labels=self._rig_labels(),
            annotations={"tokenfleet.io/runtime-endpoint": self.endpoint(runtime)},
        )
        self.nodes.append(name)
        self.node_runtime[name] = runtime
        return name

    def set_telemetry(self, node: str, **values: str) -> None:
        """Vehicle telemetry as the node agent writes it (observed-at = now)."""
        self.fleet.set_telemetry(node, **values)

    def runtime_pod_ips(self) -> dict[str, str]:
        """node -> runtime pod IP (fake kwok addresses: compared, never dialled)."""
        selector = f"{OperatorConfig().runtime_pod_label},{RIG_LABEL}={self.id}"
        pods = self.core.list_namespaced_pod(RUNTIME_NS, label_selector=selector).items
        return {
            p.spec.node_name: p.status.pod_ip
            for p in pods
            if p.spec.node_name in self.nodes and p.status and p.status.pod_ip
        }

    def wait_runtime_pods(self, timeout: float = 90) -> dict[str, str]:
        """Create the rig's runtime DaemonSet (once its nodes exist) and wait for its pod, with a
        kwok address, on every rig node.

        The DaemonSet is created after the nodes: KCM's DaemonSet controller was seen to miss a
        node added in a burst right after its DaemonSet (later node updates that do not change
        whether the pod should run are ignored). As a fallback, while a node is still without its
        pod after 10 s the DaemonSet's metadata is touched, which re-queues it.
        """
        apps = client.AppsV1Api(self.api)
        if self.daemonset is None:
            body = runtime_daemonset(self.id)
            apps.create_namespaced_daemon_set(RUNTIME_NS, body)
            self.daemonset = str(body["metadata"]["name"])
        nudges = 0
        last_nudge = time.monotonic()

        def check() -> dict[str, str] | None:
            nonlocal nudges, last_nudge
            ips = self.runtime_pod_ips()
            missing = [n for n in self.nodes if n not in ips]
            if not missing:
                return ips
            if time.monotonic() - last_nudge > 10:
                nudges += 1
                last_nudge = time.monotonic()
                apps.patch_namespaced_daemon_set(
                    str(self.daemonset),
                    RUNTIME_NS,
                    {"metadata": {"annotations": {"e2e.tokenfleet.io/nudge": str(nudges)}}},
                )
            return None

        return wait_for(
            check,
            timeout,
            f"runtime pods with addresses on {len(self.nodes)} rig nodes",
            interval=0.5,
            describe=self.runtime_pod_ips,
        )

    # ---- tokenfleet objects ------------------------------------------------------------------

    def create_cluster_object(self, plural: str, name: str, spec: dict[str, Any]) -> None:
        kind = {"immersionpods": "ImmersionPod", "vehiclepools": "VehiclePool"}[plural]
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        }
        self.custom.create_cluster_custom_object(GROUP, VERSION, plural, body)
        self.cluster_objects.append((plural, name))

    def create_pool(self, base: str, **overrides: Any) -> str:
        name = self.name(base)
        spec: dict[str, Any] = {
            "nodeSelector": {"tokenfleet.io/pool": name},
            "region": self.region,
            "ownership": self.owner,
            "battery": {
                "minStateOfChargePercent": 30,
                "targetStateOfChargePercent": 80,
                "requirePluggedIn": True,
                "maxBatteryTempC": 45,
            },
            "drainLeadSeconds": 900,
            "maxComputeTempC": 85,
            "minBandwidthMbps": 10,
            "disconnectGraceSeconds": 120,
            "staleAfterSeconds": 600,
            "hysteresisPercent": 2,
        }
        spec.update(overrides)
        self.create_cluster_object("vehiclepools", name, spec)
        return name

    def create_tank(
        self, base: str, *, sim_fields: Mapping[str, Any] | None = None, **overrides: Any
    ) -> str:
        """An ImmersionPod reading the rig's simulator (tank id = the ImmersionPod name)."""
        assert self.sim is not None, "start_sim first"
        name = self.name(base)
        spec: dict[str, Any] = {
            "site": "e2e",
            "region": self.region,
            "nodeSelector": {"tokenfleet.io/tank": name},
            "power": {"capacityKW": 100, "safetyMarginPercent": 10},
            "coolant": {
                "maxSupplyTempC": 45,
                "maxReturnTempC": 50,
                "designFlowLitersPerMinute": 300,
                "heatRejectionKW": 120,
            },
            "telemetry": {
                "source": "Redfish",
                "redfish": {"endpoint": self.sim.url, "unitId": name},
                "pollIntervalSeconds": 1,
                "staleAfterSeconds": 30,
            },
            "leakPolicy": {"action": "Drain"},
            "hysteresisPercent": 5,
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(spec.get(key), dict):
                spec[key] = {**spec[key], **value}
            else:
                spec[key] = value
        self.sim.add(name)
        # a small measured load: the background is the racks' baseline, independent of replicas
        self.sim.set(name, heat_kw=1.0, supply_c=32.0, return_c=38.0, flow_lpm=300.0)
        if sim_fields:
            self.sim.set(name, **sim_fields)
        self.create_cluster_object("immersionpods", name, spec)
        return name

    def job_body(
        self,
        name: str,
        variants: list[dict[str, Any]],
        *,
        replicas: tuple[int, int],
        target_tps: float,
        targets: list[str] | None = None,
        preference: str = "PreferRack",
        spread: Mapping[str, Any] | None = None,
        model: str = "tinyllama",
    ) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "InferenceJob",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {
                "model": {"name": model, "repositoryUri": "s3://models/tinyllama"},
                "variants": variants,
                "throughput": {"targetTokensPerSecond": target_tps},
                "replicas": {"min": replicas[0], "max": replicas[1]},
                "placement": {
                    "targets": targets or ["Rack", "Vehicle"],
                    "preference": preference,
                    "regions": [self.region],
                    "ownership": [self.owner],
                    "spread": dict(spread or {"maxReplicasPerNode": 1}),
                },
                "priority": 100,
            },
        }

    def create_job(self, name: str, variants: list[dict[str, Any]], **kwargs: Any) -> str:
        body = self.job_body(name, variants, **kwargs)
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "inferencejobs", body
        )
        self.jobs.append(name)
        return name

    def job(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "inferencejobs", name
        )
        return obj

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.job(name).get("status") or {})

    def scale_job(self, name: str, replicas: int, tokens_per_replica: float) -> None:
        """Set the job's max replicas and a throughput target that wants that many."""
        self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            self.namespace,
            "inferencejobs",
            name,
            {
                "spec": {
                    "replicas": {"min": 1, "max": replicas},
                    "throughput": {"targetTokensPerSecond": tokens_per_replica * replicas},
                }
            },
        )

    def tank(self, name: str) -> dict[str, Any]:
        """The ImmersionPod ``name`` as a dict."""
        obj: dict[str, Any] = self.custom.get_cluster_custom_object(
            GROUP, VERSION, "immersionpods", name
        )
        return obj

    def tank_status(self, name: str) -> dict[str, Any]:
        return dict(self.tank(name).get("status") or {})

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        for c in self.status(name).get("conditions") or ():
            if c.get("type") == type_:
                return dict(c)
        return None

    def placements(self, name: str, state: str | None = "Loaded") -> list[dict[str, Any]]:
        return [
            p
            for p in self.status(name).get("placements") or ()
            if state is None or p.get("state") == state
        ]

    def wait_ready(self, name: str, replicas: int, timeout: float = 90) -> dict[str, Any]:
        """Ready=True, no Reconciling, ``replicas`` Loaded and nothing else in flight."""

        def check() -> dict[str, Any] | None:
            job = self.job(name)
            st = job.get("status") or {}
            conds = {c["type"]: c for c in st.get("conditions") or ()}
            ready = conds.get("Ready", {}).get("status") == "True"
            placements = st.get("placements") or []
            loaded = [p for p in placements if p.get("state") == "Loaded"]
            ok = (
                ready
                and "Reconciling" not in conds
                and st.get("observedGeneration") == job["metadata"]["generation"]
                and len(loaded) == replicas
                and st.get("readyReplicas") == replicas
                and st.get("desiredReplicas") == replicas
                and all(p.get("state") in ("Loaded", "Failed") for p in placements)
            )
            return st if ok else None

        return wait_for(
            check,
            timeout,
            f"job {name} Ready with {replicas} loaded replicas",
            interval=0.3,
            describe=lambda: json.dumps(self.status(name), indent=1)[:3000],
        )

    def endpoint_slice(self, job: str) -> dict[str, Any] | None:
        try:
            obj = self.discovery.read_namespaced_endpoint_slice(
                f"{job}-tokenfleet", self.namespace, _preload_content=False
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data: dict[str, Any] = json.loads(obj.data)
        return data

    def slice_addresses(self, job: str) -> dict[str, str]:
        """node -> address of the ready endpoints in the job's EndpointSlice (a draining replica
        is listed as serving/terminating, not ready, until it unloads)."""
        eps = self.endpoint_slice(job) or {}
        return {
            e["nodeName"]: e["addresses"][0]
            for e in eps.get("endpoints") or ()
            if (e.get("conditions") or {}).get("ready") is not False
        }

    def events(self, involved: str) -> list[dict[str, Any]]:
        items = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={involved}"
        ).items
        return [
            {"reason": e.reason, "message": e.message, "type": e.type, "count": e.count}
            for e in items
        ]

    # ---- Triton checks (loopback endpoints from the annotations only) --------------------------

    def loaded_models(self, node: str) -> set[str]:
        """Models READY on the node's runtime (via its annotation endpoint, on loopback)."""
        endpoint = self.endpoint(self.node_runtime[node])
        req = urllib.request.Request(
            f"http://{endpoint}/v2/repository/index", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            rows = json.loads(r.read())
        return {row["name"] for row in rows if row.get("state") == "READY"}

    def generate(self, node: str, model: str, prompt: str, max_tokens: int) -> list[str]:
        """Tokens (words) of one generate call straight to the node's runtime (loopback)."""
        endpoint = self.endpoint(self.node_runtime[node])
        body = {"text_input": prompt, "max_tokens": max_tokens}
        req = urllib.request.Request(
            f"http://{endpoint}/v2/models/{model}/generate",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            result = json.loads(r.read())
        return str(result["text_output"]).split()

    # ---- teardown ------------------------------------------------------------------------------

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            names = (
                [
                    job["metadata"]["name"]
                    for job in self.custom.list_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, "inferencejobs"
                    )["items"]
                ]
                if self.owns_namespace
                else list(self.jobs)
            )
            for name in names:
                # no operator may be left to remove the finalizer: drop it, then delete
                with contextlib.suppress(ApiException):
                    self.custom.patch_namespaced_custom_object(
                        GROUP,
                        VERSION,
                        self.namespace,
                        "inferencejobs",
                        name,
                        {"metadata": {"finalizers": None}},
                        _content_type="application/merge-patch+json",
                    )
                with contextlib.suppress(ApiException):
                    self.custom.delete_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, "inferencejobs", name
                    )
        if self.daemonset is not None:
            with contextlib.suppress(ApiException):
                client.AppsV1Api(self.api).delete_namespaced_daemon_set(self.daemonset, RUNTIME_NS)
        for plural, name in self.cluster_objects:
            with contextlib.suppress(ApiException):
                self.custom.delete_cluster_custom_object(GROUP, VERSION, plural, name)
        for node in self.nodes:
            with contextlib.suppress(Exception):
                self.fleet.remove_node(node, wait=False)
        if self.tritons is not None:
            self.tritons.stop()
        if self._sim_ctx is not None:
            with contextlib.suppress(Exception):
                self._sim_ctx.__exit__(None, None, None)


class TargetWatch:
    """Samples a job's ready replicas and EndpointSlice size in a thread; records the minimum."""

    def __init__(self, rig: Rig, job: str, interval: float = 0.1) -> None:
        self.rig = rig
        self.job = job
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.errors: list[str] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready = int(self.rig.status(self.job).get("readyReplicas") or 0)
                endpoints = len(self.rig.slice_addresses(self.job))
                self.samples.append((time.monotonic(), ready, endpoints))
            except Exception as exc:
                self.errors.append(repr(exc))
            self._stop.wait(self.interval)

    def __enter__(self) -> TargetWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def min_ready(self) -> int:
        return min((s[1] for s in self.samples), default=-1)

    @property
    def min_endpoints(self) -> int:
        return min((s[2] for s in self.samples), default=-1)


@contextlib.contextmanager
def operator_running(
    fleet: Fleet, namespace: str, tmp: Path, env: Mapping[str, str] | None = None
) -> Iterator[OperatorProcess]:
    op = OperatorProcess(fleet, [namespace], tmp / "operator.log", env=env)
    op.start()
    try:
        yield op
    finally:
        op.stop()


# ---------------------------------------------------------------------------- fixtures

import pytest  # noqa: E402


@pytest.fixture(name="rig")
def rig_fixture(fleet: Fleet, namespace: str, tmp_path: Path) -> Iterator[Rig]:
    """A fresh rig in the test's namespace, torn down afterwards."""
    r = Rig(fleet, namespace, tmp_path)
    try:
        yield r
    finally:
        r.cleanup()


@pytest.fixture(name="operator")
def operator_fixture(fleet: Fleet, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """``tokenfleet run --namespace <test namespace>`` as a subprocess."""
    with operator_running(fleet, namespace, tmp_path) as op:
        yield op
        assert op.alive(), f"operator died during the test:\n{op.log_tail(60)}"
