"""Fixtures for the gateway tests: real tritonservers, a real gateway on 127.0.0.1 (the
official ``openai`` client calls it). The routing table is fed the Kubernetes dicts the watches
deliver (see gateway_kit)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from e2e.runtime import TritonFleet, TritonInstall, write_model_repository

from gateway_kit import (
    KEY,
    MODELS,
    NAMESPACE,
    OTHER_KEY,
    GatewayUnderTest,
    job_dict,
    node_dict,
    secret_dict,
    slice_dict,
)
from tokenfleet.gateway.keys import KeyStore
from tokenfleet.gateway.server import Gateway, GatewaySettings
from tokenfleet.gateway.table import RoutingTable
from tokenfleet.serving import RuntimePool
from tokenfleet.serving.endpoints import parse_networks


@pytest.fixture(scope="session")
def gateway_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonFleet]:
    try:
        install = TritonInstall.discover()
    except FileNotFoundError as exc:
        pytest.fail(f"tritonserver not available: {exc}")
    root: Path = tmp_path_factory.mktemp("gw-models")
    write_model_repository(root, MODELS)
    with TritonFleet(2, root, install=install) as fleet:
        yield fleet


@pytest.fixture
async def gw(gateway_fleet: TritonFleet, unused_tcp_port: int) -> AsyncIterator[GatewayUnderTest]:
    """Two runtimes (node-a: rack fp16, node-b: car int4) serving job ``chat`` of team-a."""
    async with RuntimePool(timeout=10.0, load_timeout=60.0) as pool:
        rack, car = (pool.get(ep) for ep in gateway_fleet.endpoints)
        for rt, model in ((rack, MODELS[0]), (car, MODELS[1])):
            await rt.load(model)
            await rt.wait_loaded(model, timeout=30)
        table = RoutingTable(dial_networks=parse_networks("127.0.0.0/8"))
        keys = KeyStore(default_rate=1000.0, clock=time.monotonic)
        table.set_node(node_dict("node-a", gateway_fleet.endpoints[0]))
        table.set_node(node_dict("node-b", gateway_fleet.endpoints[1]))
        table.set_job(
            job_dict("chat", NAMESPACE, [("node-a", "fp16", "Rack"), ("node-b", "int4", "Vehicle")])
        )
        table.set_slice(
            slice_dict(
                "chat", NAMESPACE, [("node-a", "10.0.0.1", True), ("node-b", "10.0.0.2", True)]
            )
        )
        table.set_job(job_dict("other", "team-b", [("node-a", "fp16", "Rack")]))
        table.set_slice(slice_dict("other", "team-b", [("node-a", "10.0.0.1", True)]))
        keys.set_secret(secret_dict("key-a", NAMESPACE, KEY))
        keys.set_secret(secret_dict("key-b", "team-b", OTHER_KEY))
        gateway = Gateway(
            table=table, keys=keys, settings=GatewaySettings(replica_wait_seconds=0.5)
        )
        runner = web.AppRunner(gateway.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", unused_tcp_port)
        await site.start()
        try:
            yield GatewayUnderTest(
                gateway, table, keys, f"http://127.0.0.1:{unused_tcp_port}/v1", gateway_fleet
            )
        finally:
            await runner.cleanup()
            for rt, model in ((rack, MODELS[0]), (car, MODELS[1])):
                await rt.unload(model)
                await rt.wait_unloaded(model, timeout=30)
