"""The gateway on the real control plane with real tritonservers, called with the official
``openai`` client: chat and completions (streaming and not), OpenAI-shaped errors (wrong key,
another namespace's job, unknown model, a flood over the rate limit), and a constant load while
cars unplug, depart and run hot and a tank sheds — with 0 failed requests and every response
complete."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import openai
import pytest

from e2e.cluster.fleet import Fleet
from e2e.gateway_kit import GatewayProcess, Load, create_api_key
from e2e.operator_kit import (  # noqa: F401  (fixtures)
    GROUP,
    RACK_FP16,
    VEHICLE_INT4,
    VERSION,
    OperatorProcess,
    Rig,
    operator_fixture,
    rfc3339,
    rig_fixture,
    wait_for,
)

KEY = "sk-e2e-team-0123456789abcdef"
FLOOD_KEY = "sk-e2e-flood-0123456789abcdef"
FOREIGN_KEY = "sk-e2e-foreign-0123456789abcdef"
# 10 kW per rack replica: a 20 kW site cap (18 kW after the 10 % margin) holds one of two
FP16 = RACK_FP16 | {"watts": 10000}


def _settled(rig: Rig, job: str, replicas: int, without: str | None = None) -> set[str] | None:
    placements = rig.status(job).get("placements") or []
    loaded = {p["node"] for p in placements if p.get("state") == "Loaded"}
    busy = [p for p in placements if p.get("state") in ("Loading", "Unloading")]
    if busy or len(loaded) != replicas or (without is not None and without in loaded):
        return None
    return loaded


def _conditions(rig: Rig, job: str) -> dict[str, tuple[bool, bool, bool]]:
    """node -> (ready, serving, terminating) of the job's EndpointSlice endpoints."""
    out = {}
    for e in (rig.endpoint_slice(job) or {}).get("endpoints") or ():
        c = e.get("conditions") or {}
        out[e["nodeName"]] = (
            c.get("ready") is not False,
            c.get("serving") is not False,
            c.get("terminating") is True,
        )
    return out


def _move(rig: Rig, load: Load, job: str, replicas: int, change: dict[str, str], what: str) -> str:
    (victim, *_) = sorted(p["node"] for p in rig.placements(job))
    before = load.ok
    seen: list[tuple[bool, bool, bool]] = []
    stop = threading.Event()

    def sample() -> None:  # the victim's endpoint conditions while it leaves
        while not stop.is_set():
            with contextlib.suppress(Exception):
                state = _conditions(rig, job).get(victim)
                if state is not None and (not seen or seen[-1] != state):
                    seen.append(state)
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        rig.set_telemetry(victim, **change)
        wait_for(
            lambda: _settled(rig, job, replicas, without=victim),
            90,
            f"{job}'s replica on {victim} to move away ({what})",
            describe=lambda: rig.status(job).get("placements"),
        )
    finally:
        stop.set()
        sampler.join(5)
    # drained: the endpoint left the ready set (serving, terminating) before it went away
    assert seen and seen[0] == (True, True, False), (what, seen)
    assert (False, True, True) in seen, (what, seen)
    assert victim not in _conditions(rig, job)
    wait_for(lambda: load.ok > before + 4, 30, f"requests to keep completing after {what}")
    return victim


def test_gateway_api_and_no_failed_request_while_the_fleet_moves(
    rig: Rig, operator: OperatorProcess, fleet: Fleet, namespace: str, tmp_path: Path
) -> None:
    rig.start_tritons(5, ["tinyllama-fp16", "tinyllama-int4"])
    rig.start_sim([])
    tank = rig.create_tank("tank")
    pool = rig.create_pool("pool")
    for i in range(2):
        rig.add_rack(f"rack{i}", i, tank)
    for i in range(3):
        rig.add_vehicle(f"car{i}", 2 + i, pool)
    rig.wait_runtime_pods()
    rig.create_job("racks", [FP16], replicas=(1, 2), target_tps=80, targets=["Rack"])
    rig.create_job("cars", [VEHICLE_INT4], replicas=(2, 2), target_tps=40, targets=["Vehicle"])
    rig.wait_ready("racks", 2)
    rig.wait_ready("cars", 2)

    create_api_key(rig.core, namespace, "team-key", KEY)
    create_api_key(rig.core, namespace, "flood-key", FLOOD_KEY, requests_per_second=2)
    foreign = f"{namespace}-b"
    rig.core.create_namespace({"metadata": {"name": foreign}})
    gateway = GatewayProcess(fleet.env(), tmp_path / "gateway.log")
    try:
        body = rig.job_body("theirs", [VEHICLE_INT4], replicas=(1, 1), target_tps=20)
        body["metadata"]["namespace"] = foreign
        rig.custom.create_namespaced_custom_object(GROUP, VERSION, foreign, "inferencejobs", body)
        create_api_key(rig.core, foreign, "their-key", FOREIGN_KEY)
        gateway.start()
        _api_checks(gateway, foreign)
        _load_through_moves(rig, gateway, tank)
    finally:
        gateway.stop()
        with contextlib.suppress(Exception):
            rig.custom.delete_namespaced_custom_object(
                GROUP, VERSION, foreign, "inferencejobs", "theirs"
            )
        with contextlib.suppress(Exception):
            rig.core.delete_namespace(foreign)


def _api_checks(gateway: GatewayProcess, foreign: str) -> None:
    client = openai.OpenAI(base_url=gateway.url, api_key=KEY, max_retries=0, timeout=60)

    # the jobs the key may use, and only those
    def models() -> list[str] | None:
        ids = sorted(m.id for m in client.models.list().data)
        return ids if ids == ["cars", "racks"] else None

    wait_for(models, 30, "the gateway to list the namespace's jobs")
    for model in ("cars", "racks"):
        chat = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hello fleet"}], max_tokens=6
        )
        assert chat.choices[0].finish_reason == "length"
        assert len((chat.choices[0].message.content or "").split()) == 6
        assert chat.usage is not None and chat.usage.completion_tokens == 6
        assert chat.usage.prompt_tokens == 3
        pieces = [
            c.choices[0].text
            for c in client.completions.create(
                model=model, prompt="once upon a time", max_tokens=5, stream=True
            )
        ]
        assert len("".join(pieces).split()) == 5
        comp = client.completions.create(model=model, prompt="once upon a time", max_tokens=5)
        assert comp.usage is not None and comp.usage.total_tokens == 4 + 5
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=4,
            stream=True,
        )
        assert sum(1 for c in stream if c.choices and c.choices[0].delta.content) == 4

    with pytest.raises(openai.AuthenticationError) as wrong:
        openai.OpenAI(base_url=gateway.url, api_key="sk-nope", max_retries=0).completions.create(
            model="cars", prompt="x"
        )
    assert wrong.value.status_code == 401
    assert wrong.value.body == {
        "message": "incorrect API key provided",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.completions.create(model=f"{foreign}/theirs", prompt="x")
    assert denied.value.status_code == 403
    assert isinstance(denied.value.body, dict) and denied.value.body["code"] == "permission_denied"
    with pytest.raises(openai.NotFoundError) as theirs:
        client.completions.create(model="theirs", prompt="x")  # exists, in another namespace
    assert isinstance(theirs.value.body, dict) and theirs.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(
            model="no-such-job", messages=[{"role": "user", "content": "x"}]
        )
    assert unknown.value.status_code == 404
    assert isinstance(unknown.value.body, dict)
    assert unknown.value.body["param"] == "model" and "no-such-job" in unknown.value.body["message"]
    # the foreign namespace's key sees its own job, not ours
    their = openai.OpenAI(base_url=gateway.url, api_key=FOREIGN_KEY, max_retries=0)
    assert [m.id for m in their.models.list().data] == ["theirs"]
    with pytest.raises(openai.NotFoundError):
        their.completions.create(model="cars", prompt="x")

    # a flood over the key's 2 requests/s (burst 4)
    flood = openai.OpenAI(base_url=gateway.url, api_key=FLOOD_KEY, max_retries=0, timeout=60)
    codes: list[int] = []
    bodies: list[object] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            flood.completions.create(model="cars", prompt="x", max_tokens=1)
            code = 200
        except openai.RateLimitError as exc:
            code = exc.status_code
            with lock:
                bodies.append(exc.body)
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(codes) == 16
    assert 4 <= codes.count(200) <= 6, codes
    assert codes.count(429) == 16 - codes.count(200)
    assert all(
        isinstance(b, dict) and b["code"] == "rate_limit_exceeded" and b["type"] == "requests"
        for b in bodies
    ), bodies[:2]
    assert gateway.metric("tokenfleet_gateway_requests_total", job="cars", code="429") == 0
    assert gateway.metric("tokenfleet_gateway_requests_total", code="429") == codes.count(429)


def _load_through_moves(rig: Rig, gateway: GatewayProcess, tank: str) -> None:
    soon = rfc3339(datetime.now(UTC) + timedelta(seconds=600))
    later = rfc3339(datetime.now(UTC) + timedelta(hours=8))
    with Load(gateway.url, KEY, ("cars", "racks"), workers=4, max_tokens=8) as load:
        wait_for(lambda: load.ok >= 8, 60, "the load to get going", describe=lambda: load.failures)
        # a car unplugs, then plugs back in
        victim = _move(rig, load, "cars", 2, {"plugged_in": "false"}, "unplug")
        rig.set_telemetry(victim, plugged_in="true")
        # a car's departure comes within the drain lead; then it stays after all
        victim = _move(rig, load, "cars", 2, {"departure_time": soon}, "departure")
        rig.set_telemetry(victim, departure_time=later)
        # a car runs hot (drained at once; the other replica keeps serving)
        victim = _move(rig, load, "cars", 2, {"compute_temp_c": "95"}, "run hot")
        rig.set_telemetry(victim, compute_temp_c="45")
        # the tank's site power cap drops: one of the two rack replicas is shed
        rig.custom.patch_cluster_custom_object(
            GROUP, VERSION, "immersionpods", tank, {"spec": {"power": {"capacityKW": 20}}}
        )
        wait_for(
            lambda: _settled(rig, "racks", 1),
            90,
            "one rack replica shed for the power cap",
            describe=lambda: rig.status("racks").get("placements"),
        )
        before = load.ok
        wait_for(lambda: load.ok > before + 8, 30, "requests to keep completing after the shed")
    print(
        f"\n[gateway e2e] {load.ok} requests complete, {len(load.failures)} failed, retries "
        f"{gateway.metric('tokenfleet_gateway_retries_total')}, tokens out "
        f"{gateway.metric('tokenfleet_gateway_tokens_out_total')}"
    )
    assert load.failures == [], load.failures[:5]
    assert load.ok >= 40, load.ok
    moves = {
        reason: rig_metric
        for reason in ("NotPluggedIn", "DepartureWithinDrainLead", "ComputeTooHot")
        if (rig_metric := _events(rig, "cars", reason))
    }
    assert set(moves) == {"NotPluggedIn", "DepartureWithinDrainLead", "ComputeTooHot"}, moves
    assert gateway.metric("tokenfleet_gateway_tokens_out_total", job="cars", target="Vehicle") > 0
    assert gateway.metric("tokenfleet_gateway_tokens_out_total", job="racks", target="Rack") > 0
    assert gateway.metric("tokenfleet_gateway_in_flight_requests") == 0
    for code in ("500", "502", "503"):
        assert gateway.metric("tokenfleet_gateway_requests_total", code=code) == 0, code


def _events(rig: Rig, job: str, reason: str) -> int:
    return sum(1 for e in rig.events(job) if e["reason"] == reason)
