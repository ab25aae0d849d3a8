"""`make dev` end to end (``python -m e2e.dev`` on the session's control plane).

* a make-dev-like fleet at 90x for about three simulated hours: cars arrive, charge and depart
  (the fleetsim models through ``tokenfleet devfleet`` and real ``tokenfleet agent`` processes),
  the job stays at its target, and no car ever leaves with a replica on it (every departure was
  drained before it happened); the live view, loaded in headless Chromium, shows the moves;
* stop and restart: Ctrl-C, then SIGKILL, then a run whose stdout pipe is closed, then a Ctrl-C
  while the cars' agents start; every start reaches the ready banner (but the last) and every
  stop leaves nothing behind (objects, finalizers, and processes: recorded or found in /proc);
* examples/dev/ is applied by the dev run and its tank, pool and jobs are Ready.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster.fleet import REPO, Fleet
from e2e.dev_examples import documents
from e2e.operator_kit import GROUP, RIG_LABEL, VERSION, free_port, log_tail, wait_for

DEV_RIG = "dev"
JOB = "tinyllama"


class DevRun:
    """One ``python -m e2e.dev`` process on the session fleet."""

    def __init__(self, fleet: Fleet, namespace: str, log_path: Path, *extra: str) -> None:
        self.fleet = fleet
        self.namespace = namespace
        self.log_path = log_path
        self.gateway_port = free_port()
        self.argv = [
            sys.executable,
            "-m",
            "e2e.dev",
            "--state-dir",
            str(fleet.state_dir),
            "--namespace",
            namespace,
            "--watch-namespace-only",
            "--no-bulk",
            "--gateway-port",
            str(self.gateway_port),
            "--metrics-port",
            str(free_port()),
            "--tank-port",
            str(free_port()),
            *extra,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, pipe: bool = False) -> DevRun:
        out = subprocess.PIPE if pipe else self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv, stdout=out, stderr=subprocess.STDOUT, cwd=str(REPO), env=os.environ.copy()
        )
        return self

    def text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 300) -> float:
        t0 = time.monotonic()

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"make dev exited {self.process.returncode}:\n{self.tail()}")
            return "is READY" in self.text()

        wait_for(ready, timeout, "the ready banner", interval=0.5, describe=self.tail)
        return time.monotonic() - t0

    def tail(self) -> str:
        return log_tail(self.log_path, 60)

    def interrupt(self, timeout: float = 90) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"


OTHER_JOB = "someone-elses-model"


def someone_elses_job(fleet: Fleet, namespace: str) -> None:
    """An InferenceJob another user keeps in the dev namespace (placeable nowhere: its region
    has no nodes), which no dev run may remove."""
    from kubernetes import client

    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceJob",
        "metadata": {"name": OTHER_JOB},
        "spec": {
            "model": {"name": "other", "repositoryUri": "s3://other/model"},
            "variants": [
                {
                    "name": "int4",
                    "precision": "INT4",
                    "memoryMiB": 512,
                    "tokensPerSecond": 10,
                    "watts": 20,
                    "targets": ["Vehicle"],
                }
            ],
            "throughput": {"targetTokensPerSecond": 10},
            "replicas": {"min": 0, "max": 1},
            "placement": {"targets": ["Vehicle"], "regions": ["nowhere-near-the-dev-fleet"]},
        },
    }
    client.CustomObjectsApi(fleet.api_client()).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferencejobs", body
    )


def remove_someone_elses_job(fleet: Fleet, namespace: str) -> bool:
    """Whether that job was still there; removes it (finalizer first: no operator runs)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    custom = client.CustomObjectsApi(fleet.api_client())
    try:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "inferencejobs", OTHER_JOB,
            {"metadata": {"finalizers": None}},
            _content_type="application/merge-patch+json",
        )  # fmt: skip
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "inferencejobs", OTHER_JOB)
    return True


def leftovers(fleet: Fleet, namespace: str) -> list[str]:
    """What a dev run may leave behind: its nodes, tank, pool, job, DaemonSet, processes."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = fleet.api_client()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    left = [
        f"node/{n.metadata.name}"
        for n in core.list_node(label_selector=f"{RIG_LABEL}={DEV_RIG}").items
    ]
    for plural in ("immersionpods", "vehiclepools"):
        for obj in custom.list_cluster_custom_object(GROUP, VERSION, plural)["items"]:
            if obj["metadata"]["name"].endswith(f"-{DEV_RIG}"):
                left.append(f"{plural}/{obj['metadata']['name']}")
    try:
        custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "inferencejobs", JOB)
        left.append(f"inferencejobs/{JOB}")
    except ApiException as exc:
        if exc.status != 404:
            raise
    for obj in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "inferencebatches")[
        "items"
    ]:
        left.append(f"inferencebatches/{obj['metadata']['name']}")
    try:
        core.read_namespaced_secret("tokenfleet-batch-store", namespace)
        left.append("secret/tokenfleet-batch-store")
    except ApiException as exc:
        if exc.status != 404:
            raise
    for job in custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferencejobs", label_selector=f"{RIG_LABEL}={DEV_RIG}"
    )["items"]:  # examples/dev/'s jobs
        left.append(f"inferencejobs/{job['metadata']['name']}")
    try:
        client.AppsV1Api(api).read_namespaced_daemon_set("runtime-dev", "tokenfleet-system")
        left.append("daemonset/runtime-dev")
    except ApiException as exc:
        if exc.status != 404:
            raise
    run_file = Path(fleet.state_dir) / "dev-run.json"
    if run_file.exists():
        left.append(str(run_file))
    return left


def sample_batch(fleet: Fleet, namespace: str) -> dict[str, Any]:
    """The dev run's sample InferenceBatch's status."""
    from kubernetes import client

    custom = client.CustomObjectsApi(fleet.api_client())
    obj = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferencebatches", "sample-batch"
    )
    status: dict[str, Any] = obj.get("status") or {}
    return status


def stray_processes(fleet: Fleet, since: int) -> list[str]:
    """Live processes of this session's dev runs, by what names them in /proc (not by what a run
    recorded): a command line naming the fleet's kubeconfig (agents, devfleet) or its state dir
    (a dev run), the environment's KUBECONFIG of the fleet (operator, gateway), or the dev run's
    mark; only processes started at or after ``since`` (clock ticks since boot)."""
    kubeconfig, state_dir = str(fleet.kubeconfig), str(Path(fleet.state_dir).resolve())
    markers = (f"KUBECONFIG={kubeconfig}".encode(), f"TOKENFLEET_DEV_RUN={state_dir}|".encode())
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if fields[0] == "Z" or int(fields[19]) < since:
            continue
        named = kubeconfig in cmd or state_dir in cmd
        if named or any(v.startswith(m) for v in environ for m in markers):
            out.append(f"{entry.name} {cmd[:160]}")
    return out


def started_ticks(pid: int) -> int:
    """A process's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text.rsplit(")", 1)[1].split()[19])


def example_jobs() -> list[str]:
    return [str(doc["metadata"]["name"]) for doc in documents("InferenceJob")]


def recorded_children(fleet: Fleet) -> list[tuple[int, str]]:
    doc = json.loads((Path(fleet.state_dir) / "dev-run.json").read_text())
    return [(int(c["pid"]), str(c["cmdline"])) for c in doc["children"]]


def alive(pid: int, cmdline: str) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() == cmdline
    except OSError:
        return False


class Sampler:
    """Samples the job and the dev cars' annotations every 0.5 s in a thread."""

    def __init__(self, fleet: Fleet, namespace: str) -> None:
        from kubernetes import client

        api = fleet.api_client()
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.samples: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as exc:  # the API may blink under load: counted, not fatal
                self.errors.append(repr(exc))
            self._stop.wait(0.5)

    def sample(self) -> None:
        job = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "inferencejobs", JOB
        )
        st = job.get("status") or {}
        nodes = self.core.list_node(label_selector=f"{RIG_LABEL}={DEV_RIG}").items
        cars = {
            n.metadata.name: dict(n.metadata.annotations or {})
            for n in nodes
            if n.metadata.name.startswith("car-")
        }
        on = {
            p["node"]: p["state"]
            for p in st.get("placements") or ()
            if p.get("state") in ("Loading", "Loaded", "Unloading")
        }
        plugged = {
            name: ann.get("telemetry.tokenfleet.io/plugged-in") for name, ann in cars.items()
        }
        for car, state in on.items():
            if plugged.get(car) == "false":
                self.violations.append(f"{time.strftime('%X')} {car} unplugged with a {state}")
        self.samples.append(
            {
                "ready": int(st.get("readyReplicas") or 0),
                "desired": int(st.get("desiredReplicas") or 0),
                "soc": {
                    n: float(a.get("telemetry.tokenfleet.io/soc-percent", "nan"))
                    for n, a in cars.items()
                },
                "plugged": plugged,
            }
        )

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def chromium_dom(url: str, budget_ms: int = 4000) -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is missing: apt-get install chromium (.ci/run installs it)"
    out = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return out.stdout.decode(errors="replace")


@pytest.mark.timeout(900)
def test_dev_fleet_lives_for_three_simulated_hours(
    fleet: Fleet, namespace: str, tmp_path: Path
) -> None:
    """At 90x, 120 s of wall time are three virtual hours: every car of the 4 leaves and comes
    back at least once; the job holds 1 rack + 2 car replicas at its target throughout, moved
    make-before-break ahead of every departure."""
    run = DevRun(fleet, namespace, tmp_path / "dev.log", "--runtimes", "5", "--scale", "90")
    run.start()
    assert run.process is not None
    since = started_ticks(run.process.pid)
    try:
        took = run.wait_ready()
        print(f"ready banner after {took:.1f} s (warm control plane)")
        # examples/dev/ was applied and is Ready on the dev fleet (tank, pool and its jobs)
        from kubernetes import client

        custom = client.CustomObjectsApi(fleet.api_client())
        for plural, name in (
            ("immersionpods", "factory-tank-dev"),
            ("vehiclepools", "depot-vans-dev"),
        ):
            obj = custom.get_cluster_custom_object(GROUP, VERSION, plural, name)
            conds = {c["type"]: c["status"] for c in obj["status"]["conditions"]}
            assert conds.get("Ready") == "True", (plural, obj["status"])
        assert example_jobs(), "examples/dev/ should hold InferenceJobs"
        for name in example_jobs():
            obj = custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "inferencejobs", name
            )
            conds = {c["type"]: c for c in obj.get("status", {}).get("conditions") or ()}
            assert conds.get("Ready", {}).get("status") == "True", (
                name,
                obj.get("status"),
                run.tail(),
            )
        with Sampler(fleet, namespace) as sampler:
            time.sleep(120)
        text = run.text()
        departures = text.count(" departed: ")
        arrivals = text.count(" arrived: ")
        assert departures >= 3 and arrivals >= 3, text[-3000:]
        assert sampler.violations == [], sampler.violations[:10]
        assert len(sampler.samples) > 100, sampler.errors[-5:]
        at_target = [s for s in sampler.samples if s["desired"] == 3]
        assert len(at_target) == len(sampler.samples), sampler.samples[-3:]
        assert min(s["ready"] for s in sampler.samples) >= 3, [
            (s["ready"], s["plugged"]) for s in sampler.samples if s["ready"] < 3
        ][:5]
        # a parked car charges: some car's published SoC rose while it was plugged in
        rose = any(
            b["soc"].get(car, 0) > a["soc"].get(car, 0) + 1
            for a, b in zip(sampler.samples, sampler.samples[20:], strict=False)
            for car in a["soc"]
            if a["plugged"].get(car) == "true" and b["plugged"].get(car) == "true"
        )
        assert rose, "no car charged"
        # the log says what changed, not that handlers succeeded
        assert "' succeeded." not in text and "moved to" in text, text[-2000:]

        # the live view, in a real browser: the moves (departures drained) and the replicas
        dom = chromium_dom(f"{run.base}/live")
        assert 'class="event move"' in dom and "moved to car-" in dom, dom[-3000:]
        assert 'data-job="' + namespace + '/tinyllama"' in dom
        assert "DepartureWithinDrainLead" in dom
        shot = os.environ.get("TOKENFLEET_LIVEVIEW_SCREENSHOT")
        if shot:
            subprocess.run(
                [shutil.which("chromium") or "chromium", "--headless", "--no-sandbox",
                 "--disable-gpu", "--hide-scrollbars", "--window-size=1500,1000",
                 "--virtual-time-budget=4000", f"--screenshot={shot}", f"{run.base}/live"],
                capture_output=True, timeout=120, check=True,
            )  # fmt: skip
        with urllib.request.urlopen(f"{run.base}/live/state", timeout=10) as r:
            state = json.loads(r.read())
        assert state["tokensPerSecondTotal"] > 0, state  # the load generator's tokens
        # the sample batch, served by the dev dispatcher through the departures
        sample = sample_batch(fleet, namespace)
        assert sample.get("phase") == "Completed", sample
        assert sample["requestCounts"] == {"total": 24, "completed": 24, "failed": 0}, sample
        # examples/dev/'s jobs stayed up through the departures
        assert not [j for j in example_jobs() if not _ready(custom, namespace, j)], run.tail()
    finally:
        if run.process is not None and run.process.poll() is None:
            run.interrupt()
    assert leftovers(fleet, namespace) == []
    assert stray_processes(fleet, since) == []


def _ready(custom: Any, namespace: str, name: str) -> bool:
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "inferencejobs", name)
    conds = {c["type"]: c for c in obj.get("status", {}).get("conditions") or ()}
    return bool(conds.get("Ready", {}).get("status") == "True")


@pytest.mark.timeout(1200)
def test_dev_stops_clean_and_restarts_after_ctrl_c_sigkill_and_a_closed_pipe(
    fleet: Fleet, namespace: str, tmp_path: Path
) -> None:
    # 1. Ctrl-C: everything it made is gone, finalizers included
    first = DevRun(fleet, namespace, tmp_path / "first.log", "--runtimes", "4").start()
    assert first.process is not None
    since = started_ticks(first.process.pid)
    first.wait_ready()
    assert "kubectl get infbatch -w" in first.text()
    wait_for(
        lambda: sample_batch(fleet, namespace).get("phase") == "Completed",
        180,
        "the sample batch to complete",
        describe=lambda: str(sample_batch(fleet, namespace)),
    )
    children = recorded_children(fleet)
    cmdlines = " ".join(c for _, c in children)
    assert " mini " in cmdlines and " dispatcher " in cmdlines  # weed and the dispatcher
    someone_elses_job(fleet, namespace)  # the namespace is shared: make dev leaves this alone
    assert first.interrupt() == 0, first.tail()
    assert leftovers(fleet, namespace) == [], first.tail()
    assert remove_someone_elses_job(fleet, namespace), "make dev's stop deleted a job not its own"
    assert not [c for c in children if alive(*c)]
    assert stray_processes(fleet, since) == [], first.tail()

    # 2. SIGKILL: the next run reaps its processes and objects and comes up
    second = DevRun(fleet, namespace, tmp_path / "second.log", "--runtimes", "4").start()
    second.wait_ready()
    orphans = recorded_children(fleet)
    second.kill()
    assert any(alive(*c) for c in orphans)  # a SIGKILL leaves them running...
    third = DevRun(fleet, namespace, tmp_path / "third.log", "--runtimes", "4")
    third.start(pipe=True)  # 3. ...and this one's reader goes away (`make dev | head`)
    assert third.process is not None and third.process.stdout is not None
    seen = b""
    deadline = time.monotonic() + 300
    while b"is READY" not in seen and time.monotonic() < deadline:
        chunk = third.process.stdout.read1(65536)  # type: ignore[attr-defined]
        if not chunk:
            break
        seen += chunk
    assert b"is READY" in seen, seen[-3000:].decode(errors="replace")
    assert b"processes left by a previous make dev" in seen
    assert not [c for c in orphans if alive(*c)]
    third.process.stdout.close()  # the pipe is closed: later writes fail
    time.sleep(2)
    assert third.process.poll() is None, "a closed pipe must not kill the dev fleet"
    assert third.interrupt() == 0
    assert leftovers(fleet, namespace) == []
    # nothing of any of the three runs is left running, recorded or not
    assert stray_processes(fleet, since) == []

    # 4. Ctrl-C while the cars' agents are being started (before anything recorded them)
    fourth = DevRun(fleet, namespace, tmp_path / "fourth.log", "--runtimes", "4").start()

    def an_agent_runs() -> bool:
        assert fourth.process is not None
        if fourth.process.poll() is not None:
            raise AssertionError(f"make dev exited {fourth.process.returncode}:\n{fourth.tail()}")
        return any(" agent --node " in p for p in stray_processes(fleet, since))

    wait_for(an_agent_runs, 300, "the first tokenfleet agent", interval=0.02, describe=fourth.tail)
    assert fourth.interrupt() == 0, fourth.tail()
    assert leftovers(fleet, namespace) == [], fourth.tail()
    assert stray_processes(fleet, since) == [], fourth.tail()
