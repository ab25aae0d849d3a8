"""e2e/runtime: generated model repositories, port allocation, the serve CLI (real servers)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from e2e.runtime import (
    DEFAULT_MODELS,
    EXAMPLE_MODELS,
    TritonInstall,
    TritonServer,
    allocate_ports,
    live_group_members,
    spec_for,
    write_model_repository,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_every_example_variant_has_a_generated_model(tmp_path: Path) -> None:
    names = set()
    for path in sorted((REPO_ROOT / "examples").glob("*.yaml")) + sorted(
        (REPO_ROOT / "examples" / "dev").glob("*.yaml")  # issue-13
    ):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "InferenceJob":
                continue
            model = doc["spec"]["model"]["name"]
            for variant in doc["spec"]["variants"]:
                names.add(variant.get("tritonModelName") or f"{model}-{variant['name']}")
    assert names, "examples/ should hold InferenceJobs"
    missing = sorted(names - set(EXAMPLE_MODELS))
    assert not missing, f"add {missing} to e2e.runtime.repository.EXAMPLE_MODELS"
    write_model_repository(tmp_path, sorted(names))
    for name in names:
        assert (tmp_path / name / "config.pbtxt").exists()
        assert (tmp_path / name / "1" / "model.py").exists()


def test_variant_specs() -> None:
    fp16, int4 = spec_for("tinyllama-fp16"), spec_for("tinyllama-int4")
    assert (fp16.precision, int4.precision) == ("fp16", "int4")
    assert int4.hidden_size < fp16.hidden_size
    assert fp16.seed == int4.seed  # same model, different variant
    assert spec_for("mistral-fp16").seed != fp16.seed
    assert spec_for("plain").precision == "fp32"
    awq = spec_for("qwen2.5-7b-instruct-int4-awq")
    assert awq.precision == "int4" and awq.seed == spec_for("qwen2.5-7b-instruct-fp16").seed
    with pytest.raises(ValueError, match="bad Triton model name"):
        write_model_repository(Path("/nonexistent-never-written"), ["../escape"])


def test_allocate_ports_gives_distinct_consecutive_triples() -> None:
    triples = [allocate_ports(3) for _ in range(5)]
    flat = [p for t in triples for p in t]
    assert len(set(flat)) == len(flat)
    assert all(t[1] == t[0] + 1 and t[2] == t[0] + 2 for t in triples)


@pytest.mark.triton
def test_server_lifecycle_leaves_nothing_behind(
    triton_install: TritonInstall, model_repository: Path
) -> None:
    server = TritonServer(model_repository, install=triton_install, load_models=["tinyllama-int4"])
    t0 = time.monotonic()
    server.start()
    try:
        ready_s = time.monotonic() - t0
        pid, home, prefix = server.pid, server.home, server.shm_prefix
        assert pid is not None and home is not None
        assert len(live_group_members(pid)) == 2, "tritonserver and one python stub"
        assert server.http_endpoint.startswith("127.0.0.1:")
        url = f"http://{server.http_endpoint}/v2/models/tinyllama-int4/ready"
        with urllib.request.urlopen(url, timeout=2) as resp:
            assert resp.status == 200
        assert list(Path("/dev/shm").glob(f"{prefix}*")), "python stub should hold a shm region"
        with urllib.request.urlopen(server.metrics_url, timeout=2) as resp:
            assert b"nv_inference_count" in resp.read()
    finally:
        server.stop()
    assert not server.running
    assert live_group_members(pid) == []  # server and stub are gone
    assert not home.exists()
    assert not list(Path("/dev/shm").glob(f"{prefix}*"))
    assert ready_s < 10


@pytest.mark.triton
def test_serve_cli_prints_endpoints_and_stops_on_sigterm(triton_install: TritonInstall) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "e2e.runtime", "serve", "--count", "2", "--model", "extra-int4"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        doc = json.loads(proc.stdout.readline())
        servers = doc["servers"]
        assert len(servers) == 2
        repo = Path(doc["model_repository"])
        assert sorted(p.name for p in repo.iterdir()) == sorted([*DEFAULT_MODELS, "extra-int4"])
        for s in servers:
            assert s["http"].startswith("127.0.0.1:")
            with urllib.request.urlopen(f"http://{s['http']}/v2/health/live", timeout=2) as r:
                assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        for s in servers:
            with pytest.raises(ProcessLookupError):
                os.kill(s["pid"], 0)
        assert not repo.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
