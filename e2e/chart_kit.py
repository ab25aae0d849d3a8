"""The chart's operator as local processes: exactly the args and env the installed Deployment has.

Pods on kwok nodes never run, so an e2e test installs the chart (the Deployment's pods become
"Running" on kwok racks) and then starts one ``tokenfleet run`` per pod with the container's args
and env as the apiserver holds them, resolving ``fieldRef: metadata.name`` to that pod's name,
authenticated as the chart's ServiceAccount (a token from the TokenRequest API), so the chart's
RBAC is what the process gets. Only the listen addresses change: metrics and liveness move to
free loopback ports (tests listen on 127.0.0.1 only).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from e2e.cluster.fleet import REPO, Fleet, versions
from e2e.operator_kit import TOKENFLEET, OperatorProcess

CHART = REPO / "charts" / "tokenfleet"
KUBE_VERSION = versions()["K8S_VERSION"]


def helm(
    fleet: Fleet, *args: str, check: bool = True, timeout: float = 300, stdout_only: bool = False
) -> str:
    """Run ``.bin/helm ARGS``; its stdout and stderr (stdout only with ``stdout_only``)."""
    result = subprocess.run(
        [str(fleet.helm_path), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=fleet.env(),
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result.stdout if stdout_only else result.stdout + result.stderr


def service_account_kubeconfig(
    fleet: Fleet, namespace: str, service_account: str, path: Path
) -> Path:
    """A kubeconfig for ``namespace/service_account`` (a 1 h token; context namespace set as it
    would be in the pod: kopf posts cluster-scoped objects' Events there)."""
    token = fleet.kubectl(
        "create", "token", service_account, "-n", namespace, "--duration=3600s"
    ).stdout.strip()
    admin = yaml.safe_load(fleet.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [
            {
                "name": "sa",
                "context": {
                    "cluster": admin["clusters"][0]["name"],
                    "user": service_account,
                    "namespace": namespace,
                },
            }
        ],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def _resolve_env(container: dict[str, Any], pod: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        field = ((item.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if field == "metadata.name":
            env[item["name"]] = pod["metadata"]["name"]
        elif field == "metadata.namespace":
            env[item["name"]] = pod["metadata"]["namespace"]
        else:
            raise AssertionError(f"chart env {item} cannot be resolved by the test")
    return env


class ChartOperator(OperatorProcess):
    """``tokenfleet run`` with the args/env of one of the chart's operator pods."""

    def __init__(
        self,
        fleet: Fleet,
        pod: dict[str, Any],
        kubeconfig: Path,
        log_path: Path,
        *,
        extra_env: dict[str, str] | None = None,
        verbose: bool = False,
    ) -> None:
        super().__init__(fleet, [], log_path, verbose=verbose)
        (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "operator"]
        self.pod_name = str(pod["metadata"]["name"])
        self.chart_args = [str(a) for a in container["args"]]
        self.chart_env = _resolve_env(container, pod)
        # the chart's env only (no TEST_ENV); the fleet's PATH; the ServiceAccount's kubeconfig
        base = fleet.env()
        self.env = {
            "PATH": base["PATH"],
            "HOME": base.get("HOME", "/tmp"),
            "KUBECONFIG": str(kubeconfig),
            # safety net: never dial a kwok pod address (no job runs in these tests anyway)
            "TOKENFLEET_RUNTIME_DIAL_NETWORKS": "127.0.0.0/8",
            **self.chart_env,
            **(extra_env or {}),
        }

    @property
    def argv(self) -> list[str]:
        args: list[str] = []
        for arg in self.chart_args:
            if arg.startswith("--metrics-port="):
                args.append(f"--metrics-port={self.metrics_port}")
            elif arg.startswith("--liveness="):
                args.append(f"--liveness=http://127.0.0.1:{self.liveness_port}/healthz")
            else:
                args.append(arg)
        # --verbose: kopf's per-object "Handler ... succeeded" records too (a test reads which
        # replica handled an object from them; the chart's INFO log leaves them out)
        verbose = ["--verbose"] if self.verbose else []
        return [str(TOKENFLEET), *args, "--metrics-address=127.0.0.1", *verbose]


def operator_pods(fleet: Fleet, namespace: str, release: str) -> list[dict[str, Any]]:
    """The release's operator pods (as JSON), sorted by name."""
    out = fleet.kubectl(
        "get",
        "pods",
        "-n",
        namespace,
        "-l",
        f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator",
        "-o",
        "json",
    ).stdout
    items: list[dict[str, Any]] = yaml.safe_load(out)["items"]
    return sorted(items, key=lambda p: str(p["metadata"]["name"]))
