"""The `tokenfleet` command as a user meets it: --version, --kubeconfig, one clear line when no
cluster can be reached, `crds --check` from any directory, and the build_info metric."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from prometheus_client import REGISTRY

from tokenfleet import __version__, metrics


def tokenfleet(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "tokenfleet.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )
    return result.returncode, result.stdout + result.stderr


def test_version(tmp_path: Path) -> None:
    rc, out = tokenfleet("--version", cwd=tmp_path)
    assert rc == 0 and out.strip() == f"tokenfleet {__version__}"


def test_missing_kubeconfig_is_one_line(tmp_path: Path) -> None:
    rc, out = tokenfleet("run", "--kubeconfig", str(tmp_path / "nope"), cwd=tmp_path)
    assert rc == 2
    assert out.strip().splitlines() == [
        f"tokenfleet run: --kubeconfig {tmp_path}/nope: no such file"
    ]
    rc, out = tokenfleet("run", cwd=tmp_path, env={"KUBECONFIG": str(tmp_path / "absent")})
    assert rc == 2 and "Traceback" not in out
    (line,) = out.strip().splitlines()
    assert line.startswith("tokenfleet run: no Kubernetes credentials") and "absent" in line


def test_unreachable_cluster_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    rc, out = tokenfleet("run", "--kubeconfig", str(kubeconfig), cwd=tmp_path)
    assert rc == 2 and "Traceback" not in out
    (line,) = out.strip().splitlines()
    assert line.startswith(
        f"tokenfleet run: cannot reach the Kubernetes API at https://127.0.0.1:{port}"
    )
    assert "Connection refused" in line


def test_crds_check_from_any_directory(tmp_path: Path) -> None:
    rc, out = tokenfleet("crds", "--check", cwd=tmp_path)
    assert rc == 0, out
    assert "crds: 4 CRDs match the models" in out  # issue-14: + InferenceBatch
    assert "charts/tokenfleet/templates/crds: 4 CRDs match the models" in out


def test_build_info_metric() -> None:
    metrics.record_build_info()
    samples = [
        s for m in REGISTRY.collect() if m.name == "tokenfleet_build_info" for s in m.samples
    ]
    (sample,) = samples
    assert sample.value == 1 and sample.labels["version"] == __version__
    assert sample.labels["kopf"] and sample.labels["python"].count(".") == 2
