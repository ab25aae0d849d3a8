"""Self-contained HTML report (matplotlib PNGs embedded as base64, no external files)."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from tokenfleet.simulate.engine import DAY, HOUR, Result

PLOTS = (
    "utilisation",
    "tokens_by_target",
    "cost_per_mtoken",
    "soc_traces",
    "battery_wear",
)
"""Plot ids, in report order (each is an ``<img id=...>``)."""


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=90)
    return plt, fig, ax


def _png(plt: Any, fig: Any) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    # no timestamps in the PNG metadata: same run, same bytes
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plots(result: Result, summary: dict[str, Any]) -> dict[str, str]:
    """Plot id -> base64 PNG."""
    out: dict[str, str] = {}
    tr = result.trace
    t = np.asarray(tr.t)
    n_cars = max(sum(result.pool_cars.values()), 1)
    t0 = result.scenario.start.timestamp()
    # 1. utilisation over the day
    plt, fig, ax = _figure()
    hours = ((t % DAY) // HOUR).astype(int)
    present = np.asarray(tr.cars_present, dtype=float) / n_cars
    hosting = np.asarray(tr.cars_hosting, dtype=float) / n_cars
    hp = [float(present[hours == h].mean()) if (hours == h).any() else 0.0 for h in range(24)]
    hh = [float(hosting[hours == h].mean()) if (hours == h).any() else 0.0 for h in range(24)]
    ax.plot(range(24), hp, label="parked and plugged in", marker="o")
    ax.plot(range(24), hh, label="hosting a replica", marker="o")
    ax.set_xlabel("hour of day (UTC)")
    ax.set_ylabel("share of the fleet")
    ax.set_ylim(0, 1.05)
    ax.set_title("Fleet utilisation over the day")
    ax.legend()
    out["utilisation"] = _png(plt, fig)
    # 2. tokens by target
    plt, fig, ax = _figure()
    days = (t - t0) / DAY
    ax.stackplot(days, np.asarray(tr.rack_tps), np.asarray(tr.car_tps), labels=["racks", "cars"])
    ax.set_xlabel("day")
    ax.set_ylabel("tokens/s served")
    ax.set_title("Tokens served by target")
    ax.legend(loc="upper left")
    out["tokens_by_target"] = _png(plt, fig)
    # 3. cost per Mtoken
    plt, fig, ax = _figure()
    pm = summary["per_mtoken"]
    parts = [("energy", "energy"), ("demand_charge", "demand charge"), ("battery_wear", "wear")]
    bottoms = np.zeros(2)
    for key, label in parts:
        vals = np.array([pm["cars"].get(key) or 0.0, pm["racks"].get(key) or 0.0])
        ax.bar(["cars", "racks"], vals, bottom=bottoms, label=label)
        bottoms += vals
    ax.set_ylabel("currency per million tokens")
    ax.set_title("Cost per Mtoken (energy, demand charge, battery wear)")
    ax.legend()
    out["cost_per_mtoken"] = _png(plt, fig)
    # 4. SoC traces
    plt, fig, ax = _figure()
    # one car per pool first (then more of the first pools), three at most
    firsts = {ct.pool: ct for ct in reversed(result.car_traces)}
    picked = list(reversed(firsts.values()))
    picked += [ct for ct in result.car_traces if ct not in picked]
    for k, ct in enumerate(picked[:3]):
        if not ct.t:
            continue
        ts = (np.asarray(ct.t) - t0) / DAY
        (line,) = ax.plot(ts, ct.soc, label=f"{ct.car}")
        ax.plot(ts, ct.soc_base, linestyle=":", color=line.get_color())
        for d in ct.departures:
            ax.axvline((d - t0) / DAY, color=line.get_color(), alpha=0.3, linewidth=0.8)
        if k == 0:
            ax.axhline(ct.target, color="grey", linestyle="--", label="target SoC")
    ax.set_xlabel("day (vertical lines: departures; dotted: no compute)")
    ax.set_ylabel("SoC %")
    ax.set_ylim(0, 105)
    ax.set_title("SoC of sample cars against their departures")
    ax.legend(fontsize=7)
    out["soc_traces"] = _png(plt, fig)
    # 5. wear
    plt, fig, ax = _figure()
    w = summary["battery_wear"]
    names = list(w)
    x = np.arange(len(names))
    ax.bar(
        x - 0.2,
        [w[n]["capacity_lost_kwh_per_car_year_no_compute"] for n in names],
        0.4,
        label="no compute",
    )
    ax.bar(
        x + 0.2, [w[n]["capacity_lost_kwh_per_car_year"] for n in names], 0.4, label="with compute"
    )
    ax.set_xticks(x, names)
    ax.set_ylabel("kWh of capacity lost per car-year")
    ax.set_title("Battery wear per year (BLAST-Lite) vs a no-compute baseline")
    ax.legend()
    out["battery_wear"] = _png(plt, fig)
    return out


def render_html(result: Result, summary: dict[str, Any], imgs: dict[str, str] | None = None) -> str:
    """The report; ``imgs`` (from :func:`plots`) is drawn when not given."""
    imgs = imgs if imgs is not None else plots(result, summary)
    sc = result.scenario
    rows = _rows(summary)
    body = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>tokenfleet simulate: {html.escape(sc.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:960px;margin:auto}"
        "td,th{padding:2px 8px;text-align:right}td:first-child{text-align:left}</style>",
        "</head><body>",
        f"<h1>Is a parked car a token factory? {html.escape(sc.name)}</h1>",
        f"<p>{html.escape(sc.description)}</p>",
        f"<p>{result.scenario.days} days, seed {result.seed}, "
        f"{sum(result.pool_cars.values())} cars, {result.tanks} tanks.</p>",
        "<table><tr><th>figure</th><th>value</th></tr>",
        *[f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows],
        "</table>",
    ]
    for pid in PLOTS:
        body.append(f"<h2>{pid.replace('_', ' ')}</h2>")
        body.append(f'<img id="{pid}" alt="{pid}" src="data:image/png;base64,{imgs[pid]}">')
    # for headless-browser checks: how many plots the browser decoded
    body.append(
        '<script>window.addEventListener("load",function(){var n=0;'
        'document.querySelectorAll("img").forEach(function(i){'
        "if(i.complete&&i.naturalWidth>0){n++;}});"
        'document.body.setAttribute("data-images-decoded",String(n));});</script>'
    )
    body.append("<h2>summary.json</h2><pre>")
    body.append(html.escape(json.dumps(summary, indent=2, sort_keys=True)))
    body.append("</pre></body></html>")
    return "\n".join(body) + "\n"


def _rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    def fmt(x: object) -> str:
        if isinstance(x, float):
            return f"{x:,.4g}"
        return str(x)

    pm = summary["per_mtoken"]
    rows = [
        ("tokens/day per 1,000 cars", fmt(summary["tokens"]["per_day_per_1000_cars"])),
        ("tokens/day per tank", fmt(summary["tokens"]["per_day_per_tank"])),
        ("cars: cost per Mtoken (energy+demand+wear)", fmt(pm["cars"]["total"])),
        ("cars: battery wear per Mtoken", fmt(pm["cars"]["battery_wear"])),
        ("racks: cost per Mtoken (energy+demand)", fmt(pm["racks"]["total"])),
        ("online demand served", fmt(summary["demand"]["online_share_served"])),
        ("batch demand served", fmt(summary["demand"]["batch_share_served"])),
        ("net per car per day", fmt(summary["revenue"]["net_per_car_per_day"])),
        ("departures drained late", fmt(summary["safety"]["departures_drained_late"])),
        (
            "cars below target SoC due to compute",
            fmt(summary["safety"]["cars_below_target_soc_due_to_compute"]),
        ),
        ("replica evictions per car-day", fmt(summary["placement"]["evictions_per_car_day"])),
    ]
    if "racks_only" in summary:
        rows.append(("racks only: tokens", fmt(summary["racks_only"]["tokens"])))
        rows.append(("extra tokens with cars", fmt(summary["racks_only"]["extra_tokens_share"])))
    return rows


def sweep_html(name: str, key: str, rows: Sequence[dict[str, Any]]) -> str:
    """Comparison table and plot of a sweep."""
    plt, fig, ax = _figure()
    xs = [r["value"] for r in rows]
    ax.plot(xs, [r["tokens_per_day_cars"] for r in rows], marker="o", label="cars")
    ax.plot(xs, [r["tokens_per_day_racks"] for r in rows], marker="o", label="racks")
    ax.set_xlabel(key)
    ax.set_ylabel("tokens/day")
    ax.set_title(f"Sweep of {key}")
    ax.legend()
    img = _png(plt, fig)
    cols = list(rows[0]) if rows else []
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>sweep {html.escape(name)}</title></head><body>"
        f"<h1>Sweep of {html.escape(key)}: {html.escape(name)}</h1>"
        f"<table><tr>{head}</tr>{body}</table>"
        f'<img id="sweep" alt="sweep" src="data:image/png;base64,{img}"></body></html>\n'
    )
