"""The gateway's watches against the real kube-apiserver: a watch that times out is resumed from
the last resourceVersion it saw (no full LIST, no table rebuilt every WATCH_SECONDS on the
gateway's event loop), and changes made across several resumed watches still arrive."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from e2e.cluster.fleet import Fleet
from e2e.gateway_kit import create_api_key
from e2e.operator_kit import install_crds
from tokenfleet.gateway.keys import KeyStore
from tokenfleet.gateway.table import RoutingTable
from tokenfleet.gateway.watch import KubeWatcher, _Kind
from tokenfleet.serving import listwatch


class CountingWatcher(KubeWatcher):
    """Counts the LIST calls (not the watches) per kind."""

    lists: dict[str, int]

    def _kinds(self) -> list[_Kind]:
        self.lists = {}
        kinds = super()._kinds()
        for kind in kinds:
            call = kind.list_call

            def counted(*args: Any, _call: Any = call, _name: str = kind.name, **kw: Any) -> Any:
                if not kw.get("watch"):
                    self.lists[_name] = self.lists.get(_name, 0) + 1
                return _call(*args, **kw)

            kind.list_call = counted
        return kinds


async def _until(check: Any, seconds: float) -> bool:
    for _ in range(int(seconds / 0.1)):
        if check():
            return True
        await asyncio.sleep(0.1)
    return bool(check())


async def test_timed_out_watches_resume_without_relisting(
    fleet: Fleet, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listwatch, "WATCH_SECONDS", 2)
    install_crds(fleet)
    api = fleet.api_client()
    from kubernetes import client

    core = client.CoreV1Api(api)
    keys = KeyStore(default_rate=10.0, clock=time.monotonic)
    watcher = CountingWatcher(api, RoutingTable(), keys, namespaces=(namespace,))
    watcher.start(asyncio.get_running_loop())
    try:
        assert await _until(watcher.synced, 30)
        await asyncio.sleep(7)  # three watch timeouts or more for every kind
        create_api_key(core, namespace, "late-key", "sk-late-0123456789abcdef")
        assert await _until(lambda: keys.lookup("sk-late-0123456789abcdef") is not None, 15)
        assert watcher.lists == dict.fromkeys(watcher.lists, 1), watcher.lists
        assert len(watcher.lists) == 4
    finally:
        watcher.stop()
        api.close()
