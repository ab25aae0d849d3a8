"""The runtime health prober: with the job resync at its production value (30 s), a killed
tritonserver's replica is re-placed within seconds, because the prober finds the dead runtime and
wakes its job (the job's daemon then fails over by its own path).

``test_measure_kill_to_replacement`` (opt-in: ``TOKENFLEET_E2E_MEASURE_REPS=N``) measures kill ->
replacement Loaded with the prober on (5 s) and off (0), killing at a random phase of the job's
resync, and prints the figures.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster.fleet import Fleet
from e2e.operator_kit import (  # noqa: F401  (fixtures)
    VEHICLE_INT4,
    VEHICLE_MODEL,
    Rig,
    operator_running,
    rig_fixture,
    wait_for,
)

#: the production job resync: without the prober a dead runtime waits for it
JOB_RESYNC_SECONDS = 30
#: kill -> replacement Loaded with the prober (5 s period). The resync path cannot meet it: the
#: kill comes right after the daemon's pass, whose next resync is ~30 s later (+1 s recheck).
BOUND_SECONDS = 20


def _env(probe_seconds: float, **extra: str) -> dict[str, str]:
    return {
        "TOKENFLEET_JOB_RESYNC_SECONDS": str(JOB_RESYNC_SECONDS),
        "TOKENFLEET_RUNTIME_PROBE_SECONDS": f"{probe_seconds:g}",
        **extra,
    }


def _loaded(rig: Rig, job: str) -> set[str]:
    return {p["node"] for p in rig.placements(job)}


def _loaded_elsewhere(rig: Rig, job: str, victim: str) -> set[str] | None:
    return (_loaded(rig, job) - {victim}) or None


def _clean(rig: Rig, job: str) -> str | None:
    """The one node serving the job when its record holds nothing else (no Failed entry left,
    so the daemon is back on its plain resync)."""
    placements = rig.status(job).get("placements") or []
    if len(placements) == 1 and placements[0].get("state") == "Loaded":
        return str(placements[0]["node"])
    return None


def _setup(rig: Rig, cars: int) -> None:
    rig.start_tritons(cars, [VEHICLE_MODEL])
    pool = rig.create_pool("pool")
    for i in range(cars):
        rig.add_vehicle(f"car{i}", i, pool)
    rig.wait_runtime_pods()
    rig.create_job("solo", [VEHICLE_INT4], replicas=(1, 1), target_tps=20, targets=["Vehicle"])


def _kill_and_time(rig: Rig, victim: str) -> tuple[float, str]:
    """Kill the victim's tritonserver; seconds until a replacement is Loaded, and where."""
    assert rig.tritons is not None
    t0 = time.monotonic()
    rig.tritons[rig.node_runtime[victim]].kill()
    (new, *_) = wait_for(
        lambda: _loaded_elsewhere(rig, "solo", victim),
        90,
        f"a replacement of the replica on {victim} to be Loaded",
        interval=0.1,
        describe=lambda: rig.status("solo").get("placements"),
    )
    return time.monotonic() - t0, new


def test_prober_moves_a_killed_runtimes_replica_before_the_resync(
    fleet: Fleet, namespace: str, rig: Rig, tmp_path: Path
) -> None:
    _setup(rig, 3)
    with operator_running(fleet, namespace, tmp_path, env=_env(5)) as op:
        rig.wait_ready("solo", 1)
        (victim,) = _loaded(rig, "solo")
        unreachable = op.metric("tokenfleet_runtime_probes_total", result="unreachable")
        # right after the daemon's pass: its own resync would look again only ~30 s from now
        took, new = _kill_and_time(rig, victim)
        print(f"kill -> replacement Loaded: {took:.2f} s")
        assert took < BOUND_SECONDS, (
            f"replacement took {took:.1f} s (bound {BOUND_SECONDS} s):\n{op.log_tail(40)}"
        )
        st = rig.wait_ready("solo", 1, timeout=60)
        failed = [p for p in st["placements"] if p["node"] == victim]
        assert [(p["state"], p["reason"]) for p in failed] == [("Failed", "RuntimeFailed")], failed
        assert VEHICLE_MODEL in rig.loaded_models(new)
        assert len(rig.generate(new, VEHICLE_MODEL, "hello there", 4)) == 4

        # the prober found it: an unreachable probe counted, its log names the node and the job
        assert op.metric("tokenfleet_runtime_probes_total", result="unreachable") > unreachable
        probe_logs = [
            r
            for r in op.log_records()
            if "failed its readiness probe" in str(r.get("message"))
            and victim in str(r.get("message"))
        ]
        assert probe_logs and f"{namespace}/solo" in probe_logs[0]["message"], probe_logs
        # the daemon's RuntimeFailed Event, once (the prober posts none)
        events = wait_for(
            lambda: [
                e
                for e in rig.events("solo")
                if e["reason"] == "RuntimeFailed" and victim in e["message"]
            ],
            20,
            f"the RuntimeFailed Event naming {victim}",
            describe=lambda: rig.events("solo"),
        )
        assert len(events) == 1 and events[0]["count"] in (None, 1), events
        # the dead runtime hosts no active placement any more: no longer probed nor failing
        wait_for(
            lambda: op.metric("tokenfleet_failing_runtimes") == 0,
            20,
            "tokenfleet_failing_runtimes back to 0",
            describe=lambda: op.metric("tokenfleet_failing_runtimes"),
        )
        assert op.alive(), op.log_tail(60)


def test_a_hung_runtimes_replica_moves_without_waiting_out_a_load_timeout(
    fleet: Fleet, namespace: str, rig: Rig, tmp_path: Path
) -> None:
    """A runtime that stops answering (SIGSTOP: connections hang, nothing is refused): the probe
    and the daemon's checks time out (3 s each here), the daemon fails the replica and moves it.
    It must not first retry the load on the hung node under the plan it still holds, which would
    wait out the load timeout (30 s here, 120 s in production) before the replacement."""
    _setup(rig, 3)
    load_timeout = 30
    env = _env(5, TOKENFLEET_LOAD_TIMEOUT_SECONDS=str(load_timeout))
    with operator_running(fleet, namespace, tmp_path, env=env) as op:
        rig.wait_ready("solo", 1)
        (victim,) = _loaded(rig, "solo")
        assert rig.tritons is not None
        server = rig.tritons[rig.node_runtime[victim]]
        t0 = time.monotonic()
        os.killpg(server.pid or 0, signal.SIGSTOP)
        try:
            wait_for(
                lambda: _loaded_elsewhere(rig, "solo", victim),
                90,
                f"a replacement of the replica on the hung runtime of {victim}",
                interval=0.1,
                describe=lambda: rig.status("solo").get("placements"),
            )
            took = time.monotonic() - t0
        finally:
            os.killpg(server.pid or 0, signal.SIGCONT)
        print(f"hang -> replacement Loaded: {took:.2f} s")
        # probe (<= 5 s + 3 s timeout) + two timed-out checks 1 s apart + replan + load
        assert took < load_timeout, f"took {took:.1f} s:\n{op.log_tail(40)}"
        assert op.metric("tokenfleet_runtime_probes_total", result="unreachable") >= 1
        failed = [p for p in rig.status("solo")["placements"] if p["node"] == victim]
        assert [(p["state"], p["reason"]) for p in failed] == [("Failed", "RuntimeFailed")], failed


MEASURE_REPS = int(os.environ.get("TOKENFLEET_E2E_MEASURE_REPS", "0") or 0)


@pytest.mark.skipif(MEASURE_REPS < 1, reason="set TOKENFLEET_E2E_MEASURE_REPS=N to measure")
@pytest.mark.parametrize("probe_seconds", [5, 0], ids=["prober-5s", "prober-off"])
def test_measure_kill_to_replacement(
    fleet: Fleet, namespace: str, rig: Rig, tmp_path: Path, probe_seconds: float
) -> None:
    """Kill the serving runtime N times at a random phase of the job's 30 s resync (uniform in
    [0, 30) s after the daemon's last pass) and time kill -> replacement Loaded. Each killed
    runtime is restarted (empty) once its replica moved."""
    cars = 3
    _setup(rig, cars)
    env = _env(probe_seconds, TOKENFLEET_RUNTIME_FAILURE_BACKOFF_SECONDS="5")
    rng = random.Random(int(os.environ.get("TOKENFLEET_E2E_MEASURE_SEED", "1")))
    rows: list[dict[str, Any]] = []
    with operator_running(fleet, namespace, tmp_path, env=env) as op:
        rig.wait_ready("solo", 1)
        for rep in range(MEASURE_REPS):
            victim = wait_for(
                lambda: _clean(rig, "solo"),
                60,
                "the job's record to hold only its Loaded replica",
                describe=lambda: rig.status("solo").get("placements"),
            )
            phase = rng.uniform(0, JOB_RESYNC_SECONDS)
            time.sleep(phase)
            took, new = _kill_and_time(rig, victim)
            rows.append(
                {
                    "rep": rep,
                    "phase_s": round(phase, 1),
                    "kill_to_loaded_s": round(took, 2),
                    "moved": f"{victim} -> {new}",
                }
            )
            assert rig.tritons is not None
            rig.tritons[rig.node_runtime[victim]].restart()
        assert op.alive(), op.log_tail(60)
    took_all = [r["kill_to_loaded_s"] for r in rows]
    summary = {
        "probe_seconds": probe_seconds,
        "job_resync_seconds": JOB_RESYNC_SECONDS,
        "n": len(rows),
        "median_s": statistics.median(took_all),
        "min_s": min(took_all),
        "max_s": max(took_all),
        "rows": rows,
    }
    print(json.dumps(summary))
    out = os.environ.get("TOKENFLEET_E2E_MEASURE_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(summary) + "\n")
