"""List-then-watch of the kinds the dispatcher needs (official client, one thread per kind).

The loop is the gateway's (:mod:`tokenfleet.serving.listwatch`): events are handed to the event
loop (``call_soon_threadsafe``), so the views are only touched from the loop; a watch that times
out is resumed from the last resourceVersion it saw (bookmarks included); one that fails or is
told its version is gone (410) is followed by a fresh list, which replaces what was known.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s

from tokenfleet import GROUP, VERSION
from tokenfleet.serving.listwatch import ListWatch, WatchedKind
from tokenfleet.serving.routing import ENDPOINTSLICE_MANAGED_BY, ENDPOINTSLICE_MANAGED_BY_LABEL

__all__ = ["Watched", "Watcher"]

log = logging.getLogger("tokenfleet.batch.watch")

Apply = Callable[[Mapping[str, Any], bool], None]


@dataclass(frozen=True)
class Watched:
    """One kind to watch: how to list it and what to call per object (``deleted`` flag)."""

    name: str
    list_call: Callable[..., Any]
    kwargs: dict[str, Any]
    apply: Apply
    reset: Callable[[], None]


def standard_kinds(
    api_client: Any,
    namespaces: tuple[str, ...],
    *,
    batches: tuple[Apply, Callable[[], None]],
    jobs: tuple[Apply, Callable[[], None]],
    slices: tuple[Apply, Callable[[], None]],
    nodes: tuple[Apply, Callable[[], None]],
    pools: tuple[Apply, Callable[[], None]],
) -> list[Watched]:
    """InferenceBatches, InferenceJobs, the operator's EndpointSlices (namespaced or all),
    Nodes and VehiclePools (cluster-scoped)."""
    custom = k8s.CustomObjectsApi(api_client)
    core = k8s.CoreV1Api(api_client)
    discovery = k8s.DiscoveryV1Api(api_client)
    selector = f"{ENDPOINTSLICE_MANAGED_BY_LABEL}={ENDPOINTSLICE_MANAGED_BY}"
    out = [
        Watched("nodes", core.list_node, {}, *nodes),
        Watched(
            "vehiclepools",
            custom.list_cluster_custom_object,
            {"group": GROUP, "version": VERSION, "plural": "vehiclepools"},
            *pools,
        ),
    ]
    if len(namespaces) > 1:
        raise ValueError("the dispatcher watches one namespace or all of them")
    ns = namespaces[0] if namespaces else None
    for plural, handlers in (("inferencebatches", batches), ("inferencejobs", jobs)):
        if ns is None:
            call: Callable[..., Any] = custom.list_cluster_custom_object
            kw: dict[str, Any] = {"group": GROUP, "version": VERSION, "plural": plural}
        else:
            call = custom.list_namespaced_custom_object
            kw = {"group": GROUP, "version": VERSION, "plural": plural, "namespace": ns}
        out.append(Watched(plural, call, kw, *handlers))
    if ns is None:
        out.append(
            Watched(
                "endpointslices",
                discovery.list_endpoint_slice_for_all_namespaces,
                {"label_selector": selector},
                *slices,
            )
        )
    else:
        out.append(
            Watched(
                "endpointslices",
                discovery.list_namespaced_endpoint_slice,
                {"namespace": ns, "label_selector": selector},
                *slices,
            )
        )
    return out


class Watcher:
    """The dispatcher's watches: each :class:`Watched` kind through the shared
    :class:`~tokenfleet.serving.listwatch.ListWatch` loop (a fresh list resets the kind's view
    and applies every item; a timed-out watch resumes from its last resourceVersion)."""

    def __init__(self, kinds: list[Watched]) -> None:
        self.kinds = kinds
        self._loop = ListWatch([_shared(k) for k in kinds], logger=log)

    def synced(self) -> bool:
        return self._loop.synced()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop.start(loop)

    def stop(self) -> None:
        self._loop.stop()


def _shared(kind: Watched) -> WatchedKind:
    def listed(items: list[Mapping[str, Any]]) -> None:
        kind.reset()
        for item in items:
            kind.apply(item, False)

    return WatchedKind(kind.name, kind.list_call, kind.kwargs, listed, kind.apply)
