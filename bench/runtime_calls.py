"""Benchmark: the operator's CPU per call of the two requests every runtime gets every few
seconds — the readiness probe (``GET /v2/health/ready``, every ``runtime_probe_seconds``) and
the metrics scrape (the throughput meter's, Prometheus text on HTTP port + 2).

Runs ``tokenfleet.serving.runtime.RuntimePool`` (as imported: put a checkout's ``operator/``
first on ``PYTHONPATH`` to measure that checkout) against ``--runtimes`` runtimes of
``bench.scalekit.runtimes`` in another process on 127.0.0.1: one warm-up round, then
``--rounds`` rounds of all runtimes at once (as the prober asks them), CPU time of this process
per call (``time.process_time``: much less sensitive to a busy machine than wall time). The
metrics figure includes parsing the text (the same code in every checkout). Prints one JSON
object with ``--json``.

Side by side: ``PYTHONPATH=A/operator python bench/runtime_calls.py --json`` then the same with
``B/operator``, alternated a few times (CPU per call; quote the medians and the load average).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


async def measure(endpoints: list[str], rounds: int) -> dict[str, float]:
    from tokenfleet.serving.runtime import RuntimePool

    out: dict[str, float] = {}
    async with RuntimePool(timeout=5.0) as pool:
        runtimes = [pool.get(e) for e in endpoints]
        await asyncio.gather(*(r.server_ready() for r in runtimes))  # warm: connections open
        await asyncio.gather(*(r.metrics() for r in runtimes))
        for name in ("ready", "metrics"):
            started = time.process_time()
            for _ in range(rounds):
                if name == "ready":
                    answers: list[Any] = await asyncio.gather(*(r.server_ready() for r in runtimes))
                    assert all(answers), "a runtime answered not ready"
                else:
                    await asyncio.gather(*(r.metrics() for r in runtimes))
            spent = time.process_time() - started
            out[f"{name}_cpu_ms_per_call"] = round(spent * 1000 / (rounds * len(runtimes)), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runtimes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.scalekit.runtimes", "--count", str(args.runtimes)],
        stdout=subprocess.PIPE,
        cwd=str(REPO),
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        endpoints: list[str] = json.loads(proc.stdout.readline())["endpoints"]
        figures = asyncio.run(measure(endpoints, args.rounds))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    import tokenfleet

    result = {
        "source": str(Path(tokenfleet.__file__).resolve().parents[1]),
        "runtimes": len(endpoints),
        "rounds": args.rounds,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        **figures,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"readiness probe {figures['ready_cpu_ms_per_call']} ms CPU per call, metrics scrape"
            f" {figures['metrics_cpu_ms_per_call']} ms ({result['source']})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
