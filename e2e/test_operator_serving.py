"""A job reaches Ready with replicas on racks and vehicles per its variants; every placed runtime
serves tokens; the EndpointSlice lists the runtime pods' addresses; status and metrics agree."""

from __future__ import annotations

from e2e.operator_kit import (  # noqa: F401  (fixtures)
    RACK_FP16,
    RACK_MODEL,
    VEHICLE_INT4,
    OperatorProcess,
    Rig,
    operator_fixture,
    rig_fixture,
    wait_for,
)


def test_job_ready_on_racks_and_vehicles_and_serves_tokens(
    rig: Rig, operator: OperatorProcess
) -> None:
    rig.start_tritons(4, [RACK_MODEL, "tinyllama-int4"])
    rig.start_sim(["unused"])
    tank = rig.create_tank("tank")
    pool = rig.create_pool("pool")
    racks = [rig.add_rack(f"rack{i}", i, tank) for i in range(2)]
    cars = [rig.add_vehicle(f"car{i}", 2 + i, pool) for i in range(2)]
    pod_ips = rig.wait_runtime_pods()

    rig.create_job("chat", [RACK_FP16, VEHICLE_INT4], replicas=(4, 4), target_tps=120)
    status = rig.wait_ready("chat", 4, timeout=120)

    placed = {p["node"]: p for p in status["placements"]}
    assert set(placed) == set(racks) | set(cars), placed
    for node in racks:
        assert placed[node]["target"] == "Rack" and placed[node]["variant"] == "fp16"
        assert placed[node]["tank"] == tank
    for node in cars:
        assert placed[node]["target"] == "Vehicle" and placed[node]["variant"] == "int4"
        assert placed[node]["pool"] == pool
    assert status["servedTokensPerSecond"] == 2 * 40 + 2 * 20
    assert status["serviceName"] == "chat"
    assert status["observedGeneration"] == rig.job("chat")["metadata"]["generation"]

    # The EndpointSlice lists the runtime pods' (fake, never dialled) addresses of the 4 nodes.
    addresses = wait_for(
        lambda: (a := rig.slice_addresses("chat")) and len(a) == 4 and a,
        30,
        "4 endpoints in the job's EndpointSlice",
        describe=lambda: rig.endpoint_slice("chat"),
    )
    assert addresses == {n: pod_ips[n] for n in placed}
    eps = rig.endpoint_slice("chat")
    assert eps is not None
    assert eps["metadata"]["labels"]["kubernetes.io/service-name"] == "chat"
    svc = rig.core.read_namespaced_service("chat", rig.namespace)
    assert not svc.spec.selector, "the job's Service must be selector-less"

    # Every placed runtime serves tokens (through its annotation endpoint on loopback), and
    # each runtime has exactly the variant the record says, nothing else.
    for node, p in placed.items():
        model = f"tinyllama-{p['variant']}"
        assert rig.loaded_models(node) == {model}, node
        tokens = rig.generate(node, model, "one two three", 8)
        assert len(tokens) == 8 and all(isinstance(t, str) and t for t in tokens), tokens

    # Metrics: placements by state and target, reconciles by kind and result.
    assert operator.metric("tokenfleet_placements", job="chat", target="Rack", state="Loaded") == 2
    assert (
        operator.metric("tokenfleet_placements", job="chat", target="Vehicle", state="Loaded") == 2
    )
    assert operator.metric("tokenfleet_reconciles_total", kind="InferenceJob", result="ok") > 0
    assert operator.metric("tokenfleet_served_tokens_per_second", job="chat") == 120


def test_deleting_a_job_unloads_its_replicas_and_releases_the_finalizer(
    rig: Rig, operator: OperatorProcess
) -> None:
    rig.start_tritons(2, ["tinyllama-int4"])
    pool = rig.create_pool("pool")
    cars = [rig.add_vehicle(f"car{i}", i, pool) for i in range(2)]
    rig.wait_runtime_pods()
    rig.create_job("gone", [VEHICLE_INT4], replicas=(2, 2), target_tps=40)
    rig.wait_ready("gone", 2)
    assert "tokenfleet.io/finalizer" in rig.job("gone")["metadata"]["finalizers"]
    assert all("tinyllama-int4" in rig.loaded_models(c) for c in cars)

    rig.custom.delete_namespaced_custom_object(
        "tokenfleet.io", "v1alpha1", rig.namespace, "inferencejobs", "gone"
    )

    def gone() -> bool:
        try:
            rig.job("gone")
        except Exception as exc:  # 404 once the finalizer is released
            return getattr(exc, "status", None) == 404
        return False

    wait_for(gone, 30, "the job to be deleted (finalizer released)")
    for car in cars:
        assert "tinyllama-int4" not in rig.loaded_models(car), car
    # Service and EndpointSlice are owned by the job: the garbage collector removes them.
    wait_for(
        lambda: rig.endpoint_slice("gone") is None,
        60,
        "the job's EndpointSlice to be garbage-collected",
    )


def test_job_without_capacity_is_stalled(rig: Rig, operator: OperatorProcess) -> None:
    pool = rig.create_pool("empty")  # no vehicle in it
    del pool
    rig.create_job("nowhere", [VEHICLE_INT4], replicas=(1, 2), target_tps=40)

    def stalled() -> dict[str, object] | None:
        st = rig.status("nowhere")
        conds = {c["type"]: c for c in st.get("conditions") or ()}
        ok = (
            conds.get("Stalled", {}).get("status") == "True"
            and conds.get("Ready", {}).get("status") == "False"
            and "Reconciling" not in conds
            and st.get("observedGeneration") == rig.job("nowhere")["metadata"]["generation"]
        )
        return st if ok else None

    st = wait_for(stalled, 30, "Ready=False, Stalled=True", describe=lambda: rig.status("nowhere"))
    assert st["desiredReplicas"] == 0 and st["readyReplicas"] == 0
    assert st["shortfallReason"], st
