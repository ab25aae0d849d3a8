"""A car speaks only for itself: with a car's own identity (the kubelet's: a client certificate for
``system:node:<name>`` in group ``system:nodes`` signed by the fleet's CA, which the API server
trusts), writing its own telemetry is accepted; another car's telemetry, its own
``node-restriction.kubernetes.io/`` labels, the tokenfleet role label and its runtime endpoint are
refused. The control plane runs the Node authorizer and NodeRestriction like a real cluster
(``e2e/cluster/fleet.py``); the chart's ValidatingAdmissionPolicy (rendered with helm from
``charts/tokenfleet``) covers what NodeRestriction leaves to a node."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.cluster.fleet import REPO, Fleet, versions

CHART = REPO / "charts" / "tokenfleet"
POLICY_TEMPLATE = "templates/node-identity-policy.yaml"
TELEMETRY = "telemetry.tokenfleet.io/"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def node_credentials(fleet: Fleet, node: str, where: Path) -> tuple[Path, Path]:
    """A kubelet-style client certificate for ``node``, signed by the fleet's CA."""
    pki = fleet.ca_file.parent
    where.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "node.key", "-out", "node.csr",
        "-subj", f"/O=system:nodes/CN=system:node:{node}", cwd=where,
    )  # fmt: skip
    (where / "node.ext").write_text(
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", "node.csr", "-CA", str(pki / "ca.crt"),
        "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-out", "node.crt",
        "-days", "1", "-extfile", "node.ext", cwd=where,
    )  # fmt: skip
    return where / "node.crt", where / "node.key"


def as_node(fleet: Fleet, cert: Path, key: Path) -> Any:
    config: Any = client.Configuration()
    config.host = fleet.server
    config.ssl_ca_cert = str(fleet.ca_file)
    config.cert_file = str(cert)
    config.key_file = str(key)
    return client.CoreV1Api(client.ApiClient(config))


def policy_documents(fleet: Fleet) -> list[dict[str, Any]]:
    """The chart's node-identity policy and its binding, rendered by helm."""
    result = subprocess.run(
        [
            str(fleet.helm_path), "template", "tf", str(CHART), "-n", "tokenfleet-system",
            "--kube-version", versions()["K8S_VERSION"], "--show-only", POLICY_TEMPLATE,
        ],
        capture_output=True, text=True, timeout=120, env=fleet.env(), check=True,
    )  # fmt: skip
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"], kinds
    return docs


@pytest.fixture
def identity_policy(fleet: Fleet) -> Iterator[list[dict[str, Any]]]:
    docs = policy_documents(fleet)
    text = yaml.safe_dump_all(docs)
    fleet.kubectl("apply", "-f", "-", stdin=text)
    try:
        yield docs
    finally:
        fleet.kubectl("delete", "--ignore-not-found", "-f", "-", stdin=text, check=False)


def _refused(call: Any) -> ApiException:
    with pytest.raises(ApiException) as info:
        call()
    assert info.value.status in (403, 422), info.value
    return info.value


def test_a_car_speaks_only_for_itself(
    fleet: Fleet, identity_policy: list[dict[str, Any]], tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    car, other = f"id-car-{suffix}", f"id-other-{suffix}"
    fleet.add_vehicle(car, pool=f"pool-{suffix}", attested=False)  # it may not attest itself
    fleet.add_vehicle(other, pool=f"pool-{suffix}")
    try:
        api = as_node(fleet, *node_credentials(fleet, car, tmp_path / "pki"))
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        # the policy is enforced once the API server has loaded it: retry the first refusal
        def role_change() -> None:
            api.patch_node(car, {"metadata": {"labels": {"tokenfleet.io/role": "rack"}}})

        deadline = time.monotonic() + 30
        while True:
            try:
                role_change()
            except ApiException as exc:
                assert exc.status in (403, 422), exc
                assert "tokenfleet.io/" in str(exc.body), exc.body
                break
            # admitted before the policy was active: undo as admin and try again
            fleet.patch_node(car, labels={"tokenfleet.io/role": "vehicle"})
            assert time.monotonic() < deadline, "the node-identity policy never took effect"
            time.sleep(1)

        # its own telemetry: accepted
        api.patch_node(
            car,
            {
                "metadata": {
                    "annotations": {TELEMETRY + "soc-percent": "42", TELEMETRY + "observed-at": now}
                }
            },
        )
        mine = fleet.core_v1().read_node(car)
        assert mine.metadata.annotations[TELEMETRY + "soc-percent"] == "42"

        # another car's telemetry: refused (Node authorizer / NodeRestriction)
        before = (
            fleet.core_v1().read_node(other).metadata.annotations.get(TELEMETRY + "soc-percent")
        )
        _refused(
            lambda: api.patch_node(
                other, {"metadata": {"annotations": {TELEMETRY + "soc-percent": "1"}}}
            )
        )
        after = fleet.core_v1().read_node(other).metadata.annotations.get(TELEMETRY + "soc-percent")
        assert after == before

        # its own residency / attestation labels: refused (NodeRestriction)
        for label, value in (
            ("node-restriction.kubernetes.io/tokenfleet-region", "elsewhere"),
            ("node-restriction.kubernetes.io/tokenfleet-attested", "true"),
        ):
            _refused(lambda label=label, value=value: api.patch_node(
                car, {"metadata": {"labels": {label: value}}}
            ))  # fmt: skip

        # the tokenfleet role / pool labels and its runtime endpoint: refused (the chart's policy)
        for patch in (
            {"metadata": {"labels": {"tokenfleet.io/role": "rack"}}},
            {"metadata": {"labels": {"tokenfleet.io/pool": "another-pool"}}},
            {"metadata": {"annotations": {"tokenfleet.io/runtime-endpoint": "127.0.0.1:1"}}},
        ):
            exc = _refused(lambda patch=patch: api.patch_node(car, patch))
            assert "tokenfleet.io/" in str(exc.body), exc.body
        node = fleet.core_v1().read_node(car)
        assert "node-restriction.kubernetes.io/tokenfleet-attested" not in node.metadata.labels
        assert (
            node.metadata.labels["node-restriction.kubernetes.io/tokenfleet-region"] != "elsewhere"
        )
        assert node.metadata.labels["tokenfleet.io/role"] == "vehicle"
        assert node.metadata.labels["tokenfleet.io/pool"] == f"pool-{suffix}"
        assert "tokenfleet.io/runtime-endpoint" not in (node.metadata.annotations or {})

        # and still its own telemetry after all that
        api.patch_node(car, {"metadata": {"annotations": {TELEMETRY + "soc-percent": "43"}}})
        node = fleet.core_v1().read_node(car)
        assert node.metadata.annotations[TELEMETRY + "soc-percent"] == "43"
    finally:
        fleet.remove_node(car, wait=False)
        fleet.remove_node(other, wait=False)
