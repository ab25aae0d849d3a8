"""High availability: two ``tokenfleet run --peering`` replicas, one active, the other on standby.

The peering CRDs come from the chart (``operator.replicas=2``); each operator creates its
``KopfPeering`` objects at start. The lower-priority replica pauses as soon as the higher one
shows up, only the active one handles objects, and after the active one is SIGKILLed (no goodbye
in the peering status) the standby resumes once the dead peer's lifetime has run out.
"""

from __future__ import annotations

import functools
import subprocess
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from e2e.cluster.fleet import REPO, Fleet, versions
from e2e.operator_kit import (  # noqa: F401  (fixtures)
    GROUP,
    RUNTIME_NS,
    TOKENFLEET,
    VERSION,
    OperatorProcess,
    Rig,
    free_port,
    rig_fixture,
    wait_for,
)

CHART = REPO / "charts" / "tokenfleet"
KUBE_VERSION = versions()["K8S_VERSION"]
PEERING_GROUP, PEERING_VERSION = "kopf.dev", "v1"
#: peering lifetime for the test (seconds): a silent replica is presumed dead after this
LIFETIME = 8
PAUSING = "Pausing operations in favour of"
RESUMING = "Resuming operations after the pause"


def apply_peering_crds(fleet: Fleet) -> None:
    """kopf's peering CRDs exactly as the chart renders them for an HA install."""
    rendered = subprocess.run(
        [
            str(fleet.helm_path),
            "template",
            "tf",
            str(CHART),
            "--kube-version",
            KUBE_VERSION,
            "--set",
            "operator.replicas=2",
            "--show-only",
            "templates/kopf-peering-crds.yaml",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=fleet.env(),
        check=True,
    ).stdout
    assert rendered.count("kind: CustomResourceDefinition") == 2, rendered
    fleet.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=rendered)
    for plural in ("clusterkopfpeerings", "kopfpeerings"):
        fleet.kubectl(
            "wait", "--for=condition=Established", f"crd/{plural}.{PEERING_GROUP}", "--timeout=60s"
        )


def messages(op: OperatorProcess, prefix: str) -> list[str]:
    return [
        str(r["message"]) for r in op.log_records() if str(r.get("message", "")).startswith(prefix)
    ]


def handled(op: OperatorProcess, kind: str, name: str) -> list[dict[str, Any]]:
    """The operator's log records about one object (kopf adds the object's reference)."""
    return [
        r
        for r in op.log_records()
        if isinstance(r.get("object"), dict)
        and r["object"].get("kind") == kind
        and r["object"].get("name") == name
    ]


def test_peering_without_the_crds_fails_naming_the_fix(fleet: Fleet, namespace: str) -> None:
    """Without kopf's CRDs an HA replica would wait forever for its peering: it exits instead.
    (Runs before the next test installs the CRDs; the fleet lives for one session.)"""
    crds = fleet.kubectl("get", "crd", "kopfpeerings.kopf.dev", check=False)
    if crds.returncode == 0:
        pytest.skip("kopf's peering CRDs are already installed in this session's fleet")
    result = subprocess.run(
        [
            str(TOKENFLEET),
            "run",
            "--namespace",
            namespace,
            "--peering",
            "no-crds",
            "--metrics-port",
            str(free_port()),
            "--metrics-address",
            "127.0.0.1",
            "--liveness",
            f"http://127.0.0.1:{free_port()}/healthz",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=fleet.env(),
        cwd=str(REPO),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "kopfpeerings.kopf.dev CRD is missing" in output, output
    assert "install the chart with operator.replicas > 1" in output, output


def test_two_replicas_one_active_and_the_standby_takes_over(
    fleet: Fleet, rig: Rig, tmp_path: Any
) -> None:
    apply_peering_crds(fleet)
    namespace = rig.namespace
    peering = f"ha-{rig.id}"

    def replica(role: str, priority: int) -> OperatorProcess:
        return OperatorProcess(
            fleet,
            [namespace],
            tmp_path / f"operator-{role}.log",
            env={
                "TOKENFLEET_PEERING_LIFETIME_SECONDS": str(LIFETIME),
                "POD_ID": f"{role}-{rig.id}",
            },
            extra_args=["--peering", peering, "--priority", str(priority)],
        )

    def peers(ns: str) -> dict[str, Any]:
        obj = rig.custom.get_namespaced_custom_object(
            PEERING_GROUP, PEERING_VERSION, ns, "kopfpeerings", peering
        )
        return dict(obj.get("status") or {})

    low, high = replica("low", 100), replica("high", 200)
    low_id, high_id = f"low-{rig.id}", f"high-{rig.id}"

    def both_listed(ns: str) -> dict[str, Any] | None:
        status = peers(ns)
        return status if {low_id, high_id} <= set(status) else None

    try:
        # Alone, the standby-to-be creates the peering objects and becomes active.
        low.start()
        wait_for(
            lambda: messages(low, RESUMING),
            30,
            "the first replica to become active",
            describe=lambda: low.log_tail(20),
        )
        # The higher priority replica joins; the first one pauses in its favour.
        high.start()
        wait_for(
            lambda: messages(low, PAUSING),
            30,
            "the low-priority replica to pause",
            describe=lambda: low.log_tail(20),
        )
        assert high_id in messages(low, PAUSING)[0]
        assert not messages(high, PAUSING), high.log_tail(20)
        # One KopfPeering per watched namespace (the test's and the runtime namespace), both
        # replicas keep-alive in each.
        for ns in (namespace, RUNTIME_NS):
            seen = wait_for(
                functools.partial(both_listed, ns),
                15,
                f"both replicas in KopfPeering {ns}/{peering}",
                describe=functools.partial(peers, ns),
            )
            assert seen[high_id]["priority"] == 200 and seen[low_id]["priority"] == 100
            assert seen[high_id]["lifetime"] == LIFETIME

        # Only the active replica handles a new VehiclePool.
        first = rig.create_pool("pool-a")
        wait_for(
            lambda: handled(high, "VehiclePool", first),
            30,
            f"the active replica on {first}",
            describe=lambda: high.log_tail(20),
        )
        wait_for(
            lambda: (
                rig.custom.get_cluster_custom_object(GROUP, VERSION, "vehiclepools", first)
                .get("status", {})
                .get("vehicles")
            ),
            30,
            f"status of VehiclePool {first}",
        )
        time.sleep(1)
        assert not handled(low, "VehiclePool", first), "the standby handled an object"

        # SIGKILL the active replica: it cannot say goodbye; its lease runs out after LIFETIME.
        resumed = len(messages(low, RESUMING))
        high.kill()
        killed = time.monotonic()
        # one resume per watched namespace (each has its own KopfPeering)
        wait_for(
            lambda: len(messages(low, RESUMING)) >= resumed + 2,
            LIFETIME + 20,
            "the standby to take over",
            describe=lambda: low.log_tail(20),
        )
        took = time.monotonic() - killed
        assert took <= LIFETIME + 10, f"takeover took {took:.1f} s"
        second = rig.create_pool("pool-b")
        wait_for(
            lambda: handled(low, "VehiclePool", second),
            30,
            f"the new leader on {second}",
            describe=lambda: low.log_tail(20),
        )
        # The dead peer is cleaned out of the peering status by the survivor.
        wait_for(
            lambda: high_id not in peers(namespace),
            15,
            "the dead replica to be dropped",
            describe=lambda: peers(namespace),
        )
        assert low.alive(), low.log_tail(40)
    finally:
        low.stop()
        high.stop()
        try:
            rig.custom.delete_namespaced_custom_object(
                PEERING_GROUP, PEERING_VERSION, RUNTIME_NS, "kopfpeerings", peering
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
