"""``tokenfleet simulate SCENARIO.yaml [--out DIR] [--seed N] [--sweep cars=100,1000]``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tokenfleet.simulate.engine import Result, Simulation
from tokenfleet.simulate.scenario import Scenario, ScenarioError, load_scenario


def add_simulate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", nargs="+", help="scenario YAML file(s); several = a comparison")
    p.add_argument("--out", default="simulate-out", help="output directory (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's)")
    p.add_argument(
        "--sweep",
        default=None,
        help="cars=N1,N2,...: scale the pools to each total number of cars and compare",
    )
    p.add_argument("--check", action="store_true", help="run the plan checker on every plan")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def with_cars(sc: Scenario, total: int) -> Scenario:
    """The scenario with its pools scaled to ``total`` cars (proportional, largest remainder)."""
    have = sum(p.cars for p in sc.pools)
    if not sc.pools:
        raise ScenarioError("--sweep cars needs at least one pool")
    weights = [p.cars / have if have else 1 / len(sc.pools) for p in sc.pools]
    counts = [int(total * w) for w in weights]
    rest = sorted(range(len(weights)), key=lambda i: -(total * weights[i] - counts[i]))
    for i in rest[: total - sum(counts)]:
        counts[i] += 1
    pools = [p.model_copy(update={"cars": c}) for p, c in zip(sc.pools, counts, strict=True)]
    return sc.model_copy(update={"pools": pools, "name": f"{sc.name} ({total} cars)"})


def racks_only(sc: Scenario) -> Scenario:
    return sc.model_copy(update={"pools": [p.model_copy(update={"cars": 0}) for p in sc.pools]})


def _progress(label: str, enabled: bool) -> Any:
    if not enabled:
        return None

    def show(frac: float) -> None:
        n = int(frac * 30)
        sys.stderr.write(f"\r{label} [{'#' * n}{'.' * (30 - n)}] {frac * 100:5.1f}%")
        if frac >= 1.0:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def run_one(
    sc: Scenario, seed: int | None, out: Path, check: bool, progress: bool
) -> tuple[dict[str, Any], dict[str, float]]:
    """Run a scenario and its racks-only baseline; write summary.json, report.html (plots
    embedded) and the plots as PNG files."""
    import base64

    from tokenfleet.simulate.report import plots, render_html
    from tokenfleet.simulate.summary import dumps, summarize

    timing: dict[str, float] = {}
    t = time.perf_counter()
    result: Result = Simulation(sc, seed, check=check).run(_progress(sc.name, progress))
    timing["simulate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    baseline = Simulation(racks_only(sc), seed, check=check).run()
    timing["racks_only_s"] = time.perf_counter() - t
    t = time.perf_counter()
    summary = summarize(result, baseline)
    timing["ageing_s"] = time.perf_counter() - t
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(dumps(summary))
    t = time.perf_counter()
    imgs = plots(result, summary)
    (out / "report.html").write_text(render_html(result, summary, imgs))
    for pid, data in imgs.items():
        (out / f"{pid}.png").write_bytes(base64.b64decode(data))
    timing["report_s"] = time.perf_counter() - t
    return summary, timing


def simulate_command(args: argparse.Namespace) -> int:
    from tokenfleet.simulate.report import sweep_html

    progress = not args.no_progress
    start = time.perf_counter()
    try:
        scenarios = [(Path(p).stem, load_scenario(p)) for p in args.scenario]
        variants: list[tuple[str, Scenario, Any]] = []
        key = "scenario"
        if args.sweep:
            key, _, values = args.sweep.partition("=")
            if key != "cars" or not values:
                raise ScenarioError(f"--sweep: expected cars=N1,N2,..., got {args.sweep!r}")
            try:
                totals = [int(v) for v in values.split(",")]
            except ValueError:
                raise ScenarioError(f"--sweep: not a list of integers: {values!r}") from None
            for stem, sc in scenarios:
                for n in totals:
                    variants.append((f"{stem}-cars-{n}", with_cars(sc, n), n))
        else:
            variants = [(stem, sc, stem) for stem, sc in scenarios]
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    rows: list[dict[str, Any]] = []
    for stem, sc, value in variants:
        target = out / stem if len(variants) > 1 else out
        summary, timing = run_one(sc, args.seed, target, args.check, progress)
        timing["total_s"] = time.perf_counter() - start
        line = {"timing": {k: round(v, 2) for k, v in timing.items()}, "scenario": sc.name}
        line["cars"] = summary["cars"]
        line["days"] = summary["days"]
        print(json.dumps(line, sort_keys=True))
        (target / "timing.json").write_text(json.dumps(line, sort_keys=True) + "\n")
        rows.append(
            {
                "value": value,
                "scenario": sc.name,
                "cars": summary["cars"],
                "tokens_per_day_cars": summary["tokens"]["cars"] / summary["days"],
                "tokens_per_day_racks": summary["tokens"]["racks"] / summary["days"],
                "tokens_per_day_per_1000_cars": summary["tokens"]["per_day_per_1000_cars"],
                "car_cost_per_mtoken": summary["per_mtoken"]["cars"]["total"],
                "rack_cost_per_mtoken": summary["per_mtoken"]["racks"]["total"],
                "net_per_car_per_day": summary["revenue"]["net_per_car_per_day"],
                "online_share_served": summary["demand"]["online_share_served"],
                "batch_share_served": summary["demand"]["batch_share_served"],
            }
        )
    if len(variants) > 1:
        (out / "comparison.json").write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")
        (out / "comparison.html").write_text(sweep_html(", ".join(args.scenario), key, rows))
    print(json.dumps({"out": str(out), "runs": len(variants)}))
    return 0
