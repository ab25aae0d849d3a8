"""The operator's node watch against the real API server: a server-side filtered list, a watch
resumed from its resourceVersion, and Node updates that change nothing placement reads dropped
in the watch thread (nothing reaches the event loop; a status-only update is not even parsed)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from e2e.cluster.fleet import Fleet, NodeSpec
from tokenfleet.controllers.kube import KubeWriter
from tokenfleet.controllers.nodes import parse_node_counted
from tokenfleet.controllers.nodestore import NodeChange, NodeStore
from tokenfleet.controllers.nodewatch import NodeWatch
from tokenfleet.telemetry.vehicle import ROLE_LABEL


async def _settled(count: Callable[[], int], what: str, quiet: float = 1.5) -> int:
    """Wait until ``count`` has not moved for ``quiet`` seconds (bounded); return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    last, since = count(), loop.time()
    while loop.time() - since < quiet:
        if loop.time() > deadline:
            raise AssertionError(f"{what} never settled")
        await asyncio.sleep(0.05)
        if (now := count()) != last:
            last, since = now, loop.time()
    return last


async def _until(check: Callable[[], bool], what: str, seconds: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _role_nodes(fleet: Fleet) -> set[str]:
    listed = fleet.core_v1().list_node(label_selector=ROLE_LABEL)
    return {n.metadata.name for n in listed.items}


async def test_node_watch_filters_resumes_and_drops_unchanged_updates(fleet: Fleet) -> None:
    tag = uuid.uuid4().hex[:6]
    plain, car = f"plain-{tag}", f"watch-car-{tag}"
    # a Node without the role label: not listed, not watched (the selector is server-side)
    fleet.add_node(NodeSpec(name=plain))
    store = NodeStore()
    batches: list[tuple[list[NodeChange], dict[str, Any]]] = []

    def on_changes(changes: list[NodeChange], refs: Mapping[str, Any]) -> None:
        batches.append((changes, dict(refs)))

    def changes_of(name: str) -> list[NodeChange]:
        """The changes handed over for one Node (others may change meanwhile: kwok marks the
        session's Nodes Ready)."""
        return [c for changes, _ in batches[1:] for c in changes if c.name == name]

    watch = NodeWatch(
        kube=KubeWriter(client=fleet.api_client()),
        store=store,
        parse=parse_node_counted,
        on_changes=on_changes,
        page_size=50,  # the default fleet has 200+ role Nodes: several pages
        watch_seconds=3,  # ends and resumes a few times during the test
    )
    watch.start(asyncio.get_running_loop())
    try:
        await _until(lambda: store.synced, "the first list")
        expected = _role_nodes(fleet)
        assert len(expected) > 50
        assert {n.name for n in store.infos()} == expected
        assert plain not in {n.name for n in store.infos()}
        # the list is handed over as one batch (watch events may follow at once: kwok is still
        # marking a fresh session's Nodes Ready)
        assert {c.name for c in batches[0][0]} == expected

        fleet.add_vehicle(car, pool=f"pool-{tag}")
        await _until(lambda: store.get(car) is not None, "the new car")
        assert [n.name for n in store.by_pool[f"pool-{tag}"]] == [car]
        await _until(lambda: getattr(store.get(car), "ready", None) is True, "the car Ready")
        assert changes_of(car)[0].first
        assert next(refs[car] for _, refs in batches if car in refs)["metadata"]["uid"]

        # an annotation placement does not read: the event is dropped in the watch thread (once
        # the new Node has settled: the node lifecycle controller and kwok may still change what
        # placement reads, e.g. a taint or label, right after Ready)
        seen = await _settled(lambda: len(changes_of(car)), "the new car's changes")
        before_dropped = watch.dropped
        fleet.patch_node(car, annotations={"example.com/unrelated": "1"})
        await _until(lambda: watch.dropped > before_dropped, "the dropped event")
        fleet.patch_node(plain, annotations={"example.com/unrelated": "1"})
        await asyncio.sleep(0.5)
        assert len(changes_of(car)) == seen and not changes_of(plain)
        # a status-only update (as a kubelet's status report): not even parsed
        before_unparsed = watch.unparsed
        fleet.core_v1().patch_node_status(
            car,
            {
                "status": {
                    "conditions": [
                        {"type": "TokenfleetE2E", "status": "False", "reason": "Heartbeat"}
                    ]
                }
            },
        )
        await _until(lambda: watch.unparsed > before_unparsed, "the unparsed status update")
        assert len(changes_of(car)) == seen

        fleet.set_telemetry(car, soc_percent="33")
        await _until(lambda: len(changes_of(car)) > seen, "the telemetry change")
        info = store.get(car)
        assert info is not None and info.vehicle is not None
        assert info.vehicle.soc_percent == 33.0
        assert not changes_of(car)[-1].first

        # outlives several watch timeouts: resumed from its resourceVersion, never re-listed
        await asyncio.sleep(7)
        assert watch.lists == 1
        fleet.set_telemetry(car, soc_percent="34")
        await _until(
            lambda: (
                (i := store.get(car)) is not None
                and i.vehicle is not None
                and i.vehicle.soc_percent == 34.0
            ),
            "the change after resuming",
        )

        # the role label removed: the Node leaves the selector, and the store
        fleet.patch_node(car, labels={ROLE_LABEL: None})
        await _until(lambda: store.get(car) is None, "the car leaving the selector")
        assert changes_of(car)[-1].deleted
        fleet.patch_node(car, labels={ROLE_LABEL: "vehicle"})
        await _until(lambda: store.get(car) is not None, "the car back")
        fleet.remove_node(car)
        await _until(lambda: store.get(car) is None, "the deleted car")
        assert not store.by_pool.get(f"pool-{tag}")
    finally:
        watch.stop()
        for name in (plain, car):
            fleet.remove_node(name, wait=False)
