"""A tank whose Redfish service requires authentication: credentials from a Secret in the
operator's namespace (HTTP Basic and DMTF sessions), Ready; a rotated password is picked up from
the Secret without a restart; without credentials the tank is Ready=False naming HTTP 401."""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from e2e.operator_kit import (  # noqa: F401  (fixtures)
    RUNTIME_NS,
    OperatorProcess,
    Rig,
    operator_fixture,
    rig_fixture,
    wait_for,
)


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in status.get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def test_authenticated_tanks_are_ready_and_follow_a_rotated_secret(
    rig: Rig, operator: OperatorProcess
) -> None:
    sim = rig.start_sim([])
    secret = f"bmc-{rig.id}"
    rig.core.create_namespaced_secret(
        RUNTIME_NS,
        {
            "metadata": {"name": secret},
            "type": "Opaque",
            "stringData": {"username": "operator", "password": "first"},
        },
    )
    try:
        basic = rig.name("basic")
        session = rig.name("session")
        anonymous = rig.name("anon")
        for name, auth in ((basic, "Basic"), (session, "Session"), (anonymous, None)):
            redfish: dict[str, Any] = {"endpoint": sim.url, "unitId": name}
            if auth is not None:
                redfish |= {"credentialsSecretName": secret, "authMethod": auth}
            rig.create_tank(name.removesuffix(f"-{rig.id}"), telemetry={"redfish": redfish})
            # the anonymous tank's BMC has its own account (a login is checked against all)
            user = "operator" if auth is not None else "nobody"
            sim.set(name, username=user, password="first")

        for name in (basic, session):
            wait_for(
                lambda name=name: (
                    _condition(rig.tank_status(name), "Ready").get("status") == "True"
                ),
                60,
                f"authenticated tank {name} Ready",
                describe=lambda name=name: rig.tank_status(name),
            )
        fresh = wait_for(
            lambda: _condition(rig.tank_status(anonymous), "TelemetryFresh") or None,
            30,
            "the anonymous tank's TelemetryFresh",
        )
        assert fresh["status"] == "False" and "HTTP 401" in fresh["message"], fresh
        assert _condition(rig.tank_status(anonymous), "Ready")["status"] == "False"
        # Events on the cluster-scoped ImmersionPod show in `kubectl describe`
        described = wait_for(
            lambda: (
                out
                if "TelemetryUnreachable"
                in (out := rig.fleet.kubectl("describe", "immersionpod", anonymous).stdout)
                else None
            ),
            30,
            f"kubectl describe immersionpod {anonymous} to list the Warning",
        )
        assert "HTTP 401" in described and "Events:" in described
        assert 1 <= sim.session_logins <= 2, sim.session_logins  # one session, reused

        # Rotation: the BMC's password changes first (polls fail 401), then the Secret follows.
        for name in (basic, session):
            sim.set(name, password="second")
        for name in (basic, session):
            wait_for(
                lambda name=name: (
                    "HTTP 401"
                    in _condition(rig.tank_status(name), "TelemetryFresh").get("message", "")
                ),
                30,
                f"{name} to report the failing polls",
                describe=lambda name=name: rig.tank_status(name),
            )
        rig.core.patch_namespaced_secret(secret, RUNTIME_NS, {"stringData": {"password": "second"}})
        for name in (basic, session):
            wait_for(
                lambda name=name: (
                    (c := _condition(rig.tank_status(name), "TelemetryFresh")).get("status")
                    == "True"
                    and "last poll failed" not in c.get("message", "")
                ),
                30,
                f"{name} to read the tank with the rotated password",
                describe=lambda name=name: rig.tank_status(name),
            )
            assert _condition(rig.tank_status(name), "Ready")["status"] == "True"
        assert operator.alive(), operator.log_tail(40)
    finally:
        try:
            rig.core.delete_namespaced_secret(secret, RUNTIME_NS)
        except ApiException as exc:
            if exc.status != 404:
                raise
