"""List-then-watch of the kinds the dispatcher needs (official client, one thread per kind).

Events are handed to the event loop (``call_soon_threadsafe``), so the views are only touched
from the loop, as in the gateway (:mod:`tokenfleet.gateway.watch`, whose event reader this
reuses). A watch that ends or fails is followed by a fresh list, which replaces what was known.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s

from tokenfleet import GROUP, VERSION
from tokenfleet.gateway.watch import _events
from tokenfleet.serving.routing import ENDPOINTSLICE_MANAGED_BY, ENDPOINTSLICE_MANAGED_BY_LABEL

__all__ = ["Watched", "Watcher"]

log = logging.getLogger("tokenfleet.batch.watch")

WATCH_SECONDS = 60
ERROR_PAUSE_SECONDS = 1.0

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


@dataclass
class Watcher:
    kinds: list[Watched]
    _stop: threading.Event = field(default_factory=threading.Event)
    _synced: set[str] = field(default_factory=set)

    def synced(self) -> bool:
        return len(self._synced) >= len(self.kinds)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        for kind in self.kinds:
            threading.Thread(
                target=self._run, args=(kind, loop), name=f"watch-{kind.name}", daemon=True
            ).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self, kind: Watched, loop: asyncio.AbstractEventLoop) -> None:
        while not self._stop.is_set():
            try:
                raw = kind.list_call(**kind.kwargs, _preload_content=False, _request_timeout=30)
                data = json.loads(raw.data)
                version = str((data.get("metadata") or {}).get("resourceVersion") or "")
                items = list(data.get("items") or ())

                def listed(items: list[Mapping[str, Any]] = items) -> None:
                    kind.reset()
                    for item in items:
                        kind.apply(item, False)
                    self._synced.add(kind.name)

                loop.call_soon_threadsafe(listed)
                resp = kind.list_call(
                    **kind.kwargs,
                    watch=True,
                    resource_version=version,
                    timeout_seconds=WATCH_SECONDS,
                    _preload_content=False,
                    _request_timeout=WATCH_SECONDS + 10,
                )
                try:
                    for event in _events(resp):
                        if self._stop.is_set():
                            break
                        type_ = event.get("type")
                        obj = event.get("object")
                        if type_ == "ERROR" or not isinstance(obj, dict):
                            break
                        if type_ in ("ADDED", "MODIFIED", "DELETED"):
                            loop.call_soon_threadsafe(kind.apply, obj, type_ == "DELETED")
                finally:
                    resp.release_conn()
            except Exception as exc:
                if self._stop.is_set() or loop.is_closed():
                    return
                log.warning("watching %s failed (%s); listing again", kind.name, exc)
                self._stop.wait(ERROR_PAUSE_SECONDS)
