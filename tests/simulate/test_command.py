"""`tokenfleet simulate`: files written, report plots present, bad input named, sweeps."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from tests.simulate.conftest import small_fleet

from tokenfleet.cli import main
from tokenfleet.simulate.report import PLOTS

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    p = tmp_path / "small.yaml"
    p.write_text(yaml.safe_dump(small_fleet(cars=8, days=1)))
    return p


def test_writes_summary_report_and_timing(
    scenario: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["simulate", str(scenario), "--out", str(out), "--seed", "4", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 4 and summary["cars"] == 12
    for key in ("per_day_per_1000_cars", "per_day_per_tank"):
        assert summary["tokens"][key] > 0
    assert summary["safety"]["departures_drained_late"] == 0
    assert summary["safety"]["cars_below_target_soc_due_to_compute"] == 0
    assert "racks_only" in summary and summary["per_mtoken"]["cars"]["total"] is not None
    first = (out / "summary.json").read_bytes()
    timing = json.loads(capsys.readouterr().out.splitlines()[0])
    assert timing["timing"]["simulate_s"] > 0
    html = (out / "report.html").read_text()
    for pid in PLOTS:
        m = re.search(rf'<img id="{pid}" alt="{pid}" src="data:image/png;base64,([^"]+)"', html)
        assert m, pid
        png = base64.b64decode(m.group(1))
        assert png.startswith(PNG) and len(png) > 5000, pid
        assert (out / f"{pid}.png").read_bytes() == png
    assert "http" not in html.split("<pre>")[0]  # self-contained: nothing fetched
    # the same seed again: byte-identical summary
    assert main(["simulate", str(scenario), "--out", str(out), "--seed", "4", "--no-progress"]) == 0
    assert (out / "summary.json").read_bytes() == first


def test_bad_scenario_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = small_fleet()
    data["tanks"][0]["pue"] = 0.5
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    assert main(["simulate", str(p), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "tanks.0.pue" in capsys.readouterr().err


def test_sweep_writes_a_comparison(scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    args = ["simulate", str(scenario), "--out", str(out), "--sweep", "cars=4,10", "--no-progress"]
    assert main(args) == 0
    rows = json.loads((out / "comparison.json").read_text())
    assert [r["cars"] for r in rows] == [4, 10]
    assert rows[1]["tokens_per_day_cars"] > rows[0]["tokens_per_day_cars"]
    assert 'id="sweep"' in (out / "comparison.html").read_text()
    assert main(["simulate", str(scenario), "--sweep", "racks=1", "--no-progress"]) == 2


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="Debian chromium not installed (.ci/run installs it; CI fails without it)",
)
def test_report_renders_in_headless_chromium(scenario: Path, tmp_path: Path) -> None:
    assert CHROMIUM is not None, "chromium missing in CI"
    out = tmp_path / "out"
    assert main(["simulate", str(scenario), "--out", str(out), "--no-progress"]) == 0
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            (out / "report.html").resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert f'data-images-decoded="{len(PLOTS)}"' in dom, dom[:500]
