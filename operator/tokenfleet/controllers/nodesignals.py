"""What a change of a tokenfleet Node's record does (on the event loop, after the node watch
applied it): the planner is signalled — incrementally for one known Node, in full for a new or
deleted one — and a Warning Event ``TelemetryRejected`` is posted on the Node when its set of
rejected telemetry fields changed. The first complete list also tells the planner the fleet is
known (:meth:`~tokenfleet.controllers.planner.Planner.mark_nodes_synced`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from tokenfleet.controllers import events
from tokenfleet.controllers.nodestore import NodeChange, NodeStore
from tokenfleet.controllers.planner import Planner
from tokenfleet.controllers.watchfilter import problems_of
from tokenfleet.telemetry.node import NodeInfo

__all__ = ["NodeSignals"]

log = logging.getLogger(__name__)


class NodeSignals:
    """The node watch's ``on_changes`` (module docstring). ``poster`` returns the operator's
    Event poster (``None`` before the operator started: Events then go through kopf)."""

    def __init__(
        self,
        planner: Planner,
        store: NodeStore,
        poster: Callable[[], events.EventPoster | None],
    ) -> None:
        self.planner = planner
        self.store = store
        self.poster = poster

    def __call__(self, changes: list[NodeChange], refs: Mapping[str, Mapping[str, Any]]) -> None:
        planner = self.planner
        if len(changes) <= 3:
            log.debug("node records changed: %s", [c.name for c in changes])
        for change in changes:
            if change.current is None:
                planner.signal("node", node=change.name, full=True)
                continue
            ref = refs.get(change.name)
            if ref is not None:
                self._report_problems(change.name, ref, change.current, change.previous)
            planner.signal("node", node=change.name, full=change.first)
        if self.store.synced:
            planner.mark_nodes_synced()

    def _report_problems(
        self,
        name: str,
        ref: Mapping[str, Any],
        info: NodeInfo,
        previous: NodeInfo | None,
    ) -> None:
        """A Warning Event on the Node when its set of rejected telemetry fields changes (the
        values are ignored as unknown; ``tokenfleet_telemetry_rejected_total`` counts them)."""
        now, before = problems_of(info), problems_of(previous)
        if now and now != before:
            message = "ignored telemetry (treated as unknown): " + "; ".join(sorted(now))
            log.warning("node %s: %s", name, message)
            with contextlib.suppress(Exception):
                # a Node is cluster-scoped: posted so that `kubectl describe node` shows it
                events.post(self.poster(), ref, "Warning", "TelemetryRejected", message[:1000])
