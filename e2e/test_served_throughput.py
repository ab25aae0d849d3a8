"""Served tokens/s, measured not declared: a constant load through the real gateway onto real
tritonservers, and the InferenceJob's ``status.measuredTokensPerSecond`` (the operator's reading
of the runtimes' ``vllm:generation_tokens_total`` counters) against the tokens the callers got.

* at rest the job is measured at 0 while its declared ``servedTokensPerSecond`` is 80;
* under load the figure rises above 0 and tracks the tokens/s the callers received;
* the runtimes' counters, the gateway's ``tokenfleet_gateway_tokens_out_total`` and the tokens in
  the responses agree exactly once the load has stopped;
* when the load stops the figure falls back to 0 (the declared one does not move).
"""

from __future__ import annotations

import statistics
import time
import urllib.request
from pathlib import Path

from e2e.cluster.fleet import Fleet
from e2e.gateway_kit import GatewayProcess, Load, create_api_key
from e2e.operator_kit import (  # noqa: F401  (fixtures)
    RACK_FP16,
    Rig,
    operator_running,
    rig_fixture,
    sum_metric,
    wait_for,
)

KEY = "sk-e2e-measured-0123456789abcdef"
MAX_TOKENS = 16
WINDOW_S = 6.0
#: the operator scrapes each runtime every second and takes the rate over a 6 s window
METER_ENV = {
    "TOKENFLEET_THROUGHPUT_SECONDS": "1",
    "TOKENFLEET_THROUGHPUT_WINDOW_SECONDS": str(WINDOW_S),
}


def _measured(rig: Rig) -> float | None:
    value = rig.status("racks").get("measuredTokensPerSecond")
    return None if value is None else float(value)


def _runtime_tokens(rig: Rig) -> float:
    assert rig.tritons is not None
    total = 0.0
    for server in rig.tritons.servers:
        with urllib.request.urlopen(server.metrics_url, timeout=5) as r:
            text = r.read().decode()
        total += sum_metric(text, "vllm:generation_tokens_total", model="tinyllama-fp16")
    return total


def test_measured_tokens_per_second_follows_the_load(
    rig: Rig, fleet: Fleet, namespace: str, tmp_path: Path
) -> None:
    rig.start_tritons(2, ["tinyllama-fp16"])
    rig.start_sim([])
    tank = rig.create_tank("tank")
    for i in range(2):
        rig.add_rack(f"rack{i}", i, tank)
    rig.wait_runtime_pods()
    with operator_running(fleet, namespace, tmp_path, env=METER_ENV):
        rig.create_job("racks", [RACK_FP16], replicas=(2, 2), target_tps=80, targets=["Rack"])
        rig.wait_ready("racks", 2)
        # at rest: measured 0 (the runtimes export the counter), declared 2 x 40
        wait_for(lambda: _measured(rig) == 0.0, 60, "the job to be measured at rest")
        assert rig.status("racks")["servedTokensPerSecond"] == 80
        assert _runtime_tokens(rig) == 0

        create_api_key(rig.core, namespace, "team-key", KEY)
        gateway = GatewayProcess(fleet.env(), tmp_path / "gateway.log")
        try:
            gateway.start()
            with Load(gateway.url, KEY, ("racks",), workers=4, max_tokens=MAX_TOKENS) as load:
                wait_for(
                    lambda: load.ok >= 4,
                    60,
                    "the load to get going",
                    describe=lambda: load.failures,
                )
                rising = wait_for(
                    lambda: (m := _measured(rig)) is not None and m > 0 and m,
                    60,
                    "the measured tokens/s to rise above 0",
                    describe=lambda: rig.status("racks"),
                )
                print(f"\n[measured] first non-zero figure {rising} tokens/s")
                # steady state: the figure over a span of windows against what the callers got
                time.sleep(WINDOW_S)
                t0, ok0 = time.monotonic(), load.ok
                figures: list[float] = []
                while time.monotonic() - t0 < 3 * WINDOW_S:
                    value = _measured(rig)
                    assert value is not None
                    figures.append(value)
                    time.sleep(0.5)
                t1, ok1 = time.monotonic(), load.ok
            assert load.failures == [], load.failures[:5]
            received = (ok1 - ok0) * MAX_TOKENS / (t1 - t0)
            median = statistics.median(figures)
            print(
                f"[measured] callers received {received:.1f} tokens/s; status median "
                f"{median:.1f} (min {min(figures):.1f}, max {max(figures):.1f}) over "
                f"{len(figures)} reads; declared {rig.status('racks')['servedTokensPerSecond']}"
            )
            assert received > 0
            # the operator's window and the callers' span differ by up to a window, and the
            # machine is shared: within a third of each other, and far from the declared 80
            assert 0.67 * received <= median <= 1.5 * received, (median, received, figures)

            # every token generated reached a caller, and was counted by the gateway
            returned = load.ok * MAX_TOKENS
            wait_for(
                lambda: _runtime_tokens(rig) == returned or None,
                15,
                "the runtimes' counters to show every token returned",
                describe=lambda: (_runtime_tokens(rig), returned),
            )
            assert gateway.metric("tokenfleet_gateway_tokens_out_total", job="racks") == returned
        finally:
            gateway.stop()

        # the load stopped: the measured figure goes back to 0, the declared one stays
        wait_for(
            lambda: _measured(rig) == 0.0,
            4 * WINDOW_S + 30,
            "the measured tokens/s to fall back to 0",
            describe=lambda: rig.status("racks"),
        )
        assert rig.status("racks")["servedTokensPerSecond"] == 80
