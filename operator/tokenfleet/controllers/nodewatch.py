"""The operator's own list-and-watch of tokenfleet Nodes (not a kopf index: see below).

kopf (1.45) runs one worker per listed object of an indexed kind and, at start, each worker that
has indexed its object wakes every other one waiting for the indexes (one shared condition), so
a kopf index over N Nodes costs O(N²) wake-ups before the first handler runs: 4.5 s at 1,000
Nodes, about 140 s at 5,000. Nodes are the one kind that comes in thousands, so they are watched
here instead, the way an informer does it:

* one thread LISTs the Nodes with the ``tokenfleet.io/role`` label (a server-side
  ``labelSelector``; pages of :data:`PAGE_SIZE`), then WATCHes from the list's resourceVersion
  with bookmarks, resuming from the last version seen when a watch times out; a 410 Gone or an
  error is followed by a fresh list (after a short pause on errors) — the loop every watch of
  tokenfleet's runs, :func:`tokenfleet.serving.listwatch.list_then_watch`;
* each Node is parsed in that thread into its compact :class:`NodeInfo` (labels, the
  annotations placement parses, telemetry parsed, readiness, allocatable memory) and compared
  with the record last handed over: an event whose record did not change (a heartbeat, a
  kubelet/kwok status field, an unrelated annotation) ends there, before any work on the event
  loop. Before parsing, the raw parts the parser reads
  (:func:`~tokenfleet.telemetry.node.node_fields`) are compared with the last event's: when
  they are equal (a status heartbeat: every Node once per kubelet status report, 5,000 Nodes
  every 300 s are ~17 events/s) the event is not parsed at all;
* the watch gathers (``gather_seconds``, the operator's ``node_watch_gather_seconds``, 0.2 s):
  after an event it had to wait for, it waits that long before reading on, so the heartbeats of
  a large fleet are read a few at a time rather than each in its own wake-up of the thread
  (:mod:`tokenfleet.serving.listwatch`); a change that follows another event within that time
  is handed over up to that much later;
* a change is handed to the event loop (``call_soon_threadsafe``), applied to the
  :class:`~tokenfleet.controllers.nodestore.NodeStore` and passed to ``on_changes`` (the planner
  signal, the TelemetryRejected Event); a list is applied at once, as one batch (passed on
  even when it changed nothing: the store is ``synced`` from then on).

The raw bodies are never kept: only the records, per Node the few fields an Event about it
names (``uid``), and the raw parts the parser reads (labels and annotations, a few scalars).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from tokenfleet.controllers.kube import KubeWriter
from tokenfleet.controllers.nodestore import NodeChange, NodeStore
from tokenfleet.serving.listwatch import list_then_watch, post_to, watch_once
from tokenfleet.telemetry.node import NodeFields, NodeInfo, node_fields
from tokenfleet.telemetry.vehicle import ROLE_LABEL

__all__ = ["NODE_SELECTOR", "NodeRef", "NodeWatch", "node_ref"]

log = logging.getLogger(__name__)

NODE_SELECTOR: Final = ROLE_LABEL
"""The server-side label selector: Nodes that carry the role label (any value)."""
PAGE_SIZE: Final = 500
WATCH_SECONDS: Final = 300
ERROR_PAUSE_SECONDS: Final = 1.0

NodeRef = Mapping[str, Any]
"""The part of a Node body an Event about it needs (apiVersion, kind, name, uid)."""

OnChanges = Callable[[list[NodeChange], Mapping[str, NodeRef]], None]


def node_ref(body: Mapping[str, Any]) -> dict[str, Any]:
    """What an Event's ``involvedObject`` reads of a Node body."""
    metadata = body.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": str(metadata.get("name", "")), "uid": str(metadata.get("uid", ""))},
    }


@dataclass
class NodeWatch:
    """List-and-watch of the tokenfleet Nodes into ``store`` (module docstring).

    ``parse`` turns a Node body into its record (counting rejected telemetry); it runs in the
    watch thread. ``on_changes`` runs on the event loop after each applied batch.
    """

    kube: KubeWriter
    store: NodeStore
    parse: Callable[[Mapping[str, Any]], NodeInfo]
    on_changes: OnChanges
    page_size: int = PAGE_SIZE
    watch_seconds: int = WATCH_SECONDS
    gather_seconds: float = 0.0
    """After an event it had to wait for, the watch waits this long before it reads on."""
    events: int = 0
    """Watch events received (ADDED/MODIFIED/DELETED)."""
    dropped: int = 0
    """Of those, the ones whose record did not change (nothing handed to the event loop)."""
    lists: int = 0
    unparsed: int = 0
    """Of the dropped ones, those not even parsed (the raw parts the parser reads unchanged)."""
    _seen: dict[str, NodeInfo] = field(default_factory=dict)
    _fields: dict[str, NodeFields] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    # ---- wiring (event loop) ---------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._thread is not None:
            return
        self._loop = loop
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tokenfleet-node-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current request (the thread is a daemon: a watch blocked on a quiet
        stream does not hold the process)."""
        self._stop.set()
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _deliver(self, changes: list[NodeChange], refs: Mapping[str, NodeRef]) -> None:
        if changes:
            self.on_changes(changes, refs)

    def _apply_list(self, infos: list[NodeInfo], refs: dict[str, NodeRef]) -> None:
        # delivered even when nothing changed: the first list of an empty fleet is news too
        self.on_changes(self.store.replace(infos), refs)

    def _apply_one(self, info: NodeInfo, ref: NodeRef) -> None:
        change = self.store.apply(info)
        self._deliver([change] if change is not None else [], {info.name: ref})

    def _apply_gone(self, name: str, ref: NodeRef) -> None:
        change = self.store.remove(name)
        self._deliver([change] if change is not None else [], {name: ref})

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        post_to(self._loop, fn, *args)

    # ---- the thread -----------------------------------------------------------------------

    def _list(self) -> str:
        """LIST every page; hand the complete list to the loop; return its resourceVersion."""
        started = time.monotonic()
        infos: list[NodeInfo] = []
        refs: dict[str, NodeRef] = {}
        seen: dict[str, NodeInfo] = {}
        fields: dict[str, NodeFields] = {}
        token: str | None = None
        version = ""
        pages = 0
        while True:
            kwargs: dict[str, Any] = {"label_selector": NODE_SELECTOR, "limit": self.page_size}
            if token:
                kwargs["_continue"] = token
            resp = self.kube.list_nodes(_request_timeout=60, **kwargs)
            data = orjson.loads(resp.data)
            pages += 1
            del resp
            metadata = data.get("metadata") or {}
            version = str(metadata.get("resourceVersion") or version)
            for body in data.get("items") or ():
                name = str((body.get("metadata") or {}).get("name", ""))
                held = self._seen.get(name)
                info = self.parse(body)
                # the same record as held: the same object (no second copy in memory)
                info = held if held == info and held is not None else info
                seen[name] = info
                fields[name] = node_fields(body)
                infos.append(info)
                refs[name] = node_ref(body)
            del data
            token = metadata.get("continue") or None
            if not token:
                break
        self._seen = seen
        self._fields = fields
        self.lists += 1
        log.info(
            "listed %d tokenfleet Nodes (%d pages) in %.2f s",
            len(infos),
            pages,
            time.monotonic() - started,
        )
        self._post(self._apply_list, infos, refs)
        return version

    def _event(self, kind: str, body: Mapping[str, Any]) -> None:
        self.events += 1
        name = str((body.get("metadata") or {}).get("name", ""))
        if kind == "DELETED":
            self._fields.pop(name, None)
            if self._seen.pop(name, None) is None:
                self.dropped += 1
                return
            self._post(self._apply_gone, name, node_ref(body))
            return
        if kind not in ("ADDED", "MODIFIED"):
            return
        raw = node_fields(body)
        if name in self._seen and self._fields.get(name) == raw:
            self.dropped += 1  # what the parser reads is as before: the record is too
            self.unparsed += 1
            return
        self._fields[name] = raw
        info = self.parse(body)
        if self._seen.get(name) == info:
            self.dropped += 1  # a heartbeat, a status field or annotation placement ignores
            return
        self._seen[name] = info
        self._post(self._apply_one, info, node_ref(body))

    def _run(self) -> None:
        list_then_watch(
            "tokenfleet Nodes",
            self._list,
            lambda version: watch_once(
                self.kube.list_nodes,
                {"label_selector": NODE_SELECTOR},
                version,
                self._event,
                self._stop,
                self.watch_seconds,
                self.gather_seconds,
            ),
            self._stop,
            log,
            ERROR_PAUSE_SECONDS,
        )
