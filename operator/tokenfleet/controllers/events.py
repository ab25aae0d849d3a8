"""Events that ``kubectl describe`` shows, for cluster-scoped objects too.

kopf posts an Event for a cluster-scoped object (ImmersionPod, VehiclePool, Node) in the
operator's own namespace with ``involvedObject.namespace`` set to that namespace, so ``kubectl
describe immersionpod <tank>`` (which looks for ``involvedObject.namespace=""``) shows
``Events: <none>``. :class:`EventPoster` posts those itself, as the kubelet and the node
controller do: in namespace ``default`` (the only one the apiserver accepts for an object without
a namespace, besides ``kube-system``) with no ``involvedObject.namespace``. Namespaced objects
still go through ``kopf.event``. Posting never blocks the caller (a task on the operator's loop)
and never raises (a failed post is logged).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import kopf

from tokenfleet.api.conditions import rfc3339
from tokenfleet.clock import Clock

if TYPE_CHECKING:
    from tokenfleet.controllers.kube import KubeWriter

log = logging.getLogger(__name__)

#: the namespace of Events about cluster-scoped objects (apiserver validation allows only this
#: or kube-system when involvedObject.namespace is empty)
CLUSTER_EVENTS_NAMESPACE = "default"
COMPONENT = "tokenfleet-operator"


def cluster_event(
    body: Mapping[str, Any], type_: str, reason: str, message: str, *, now: datetime, instance: str
) -> dict[str, Any]:
    """The core/v1 Event for a cluster-scoped object (pure)."""
    meta = body.get("metadata") or {}
    name = str(meta.get("name") or "unknown")
    involved = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "name": name,
        "uid": meta.get("uid"),
    }
    stamp = rfc3339(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": CLUSTER_EVENTS_NAMESPACE},
        "involvedObject": {k: v for k, v in involved.items() if v},
        "type": type_,
        "reason": reason[:128],
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance[:128],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class EventPoster:
    """Posts Events from any thread of the operator (part of the operator context; bound to the
    operator's event loop at startup)."""

    def __init__(self, kube: KubeWriter, clock: Clock, loop: asyncio.AbstractEventLoop) -> None:
        self.kube = kube
        self.clock = clock
        self.loop = loop
        self.instance = os.environ.get("POD_ID") or socket.gethostname()
        self._tasks: set[asyncio.Task[None]] = set()
        self.posted = 0
        self.failed = 0

    def post(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        if (body.get("metadata") or {}).get("namespace"):
            kopf.event(cast(Any, body), type=type_, reason=reason, message=message)
            return
        event = cluster_event(
            body, type_, reason, message, now=self.clock.now(), instance=self.instance
        )
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self._spawn(event)
        else:  # an executor thread (sync handlers)
            self.loop.call_soon_threadsafe(self._spawn, event)

    def _spawn(self, event: dict[str, Any]) -> None:
        task = self.loop.create_task(self._create(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _create(self, event: dict[str, Any]) -> None:
        try:
            await self.kube.create_event(CLUSTER_EVENTS_NAMESPACE, event)
            self.posted += 1
        except Exception as error:  # never let an Event break a reconcile
            self.failed += 1
            log.warning(
                "could not post Event %s on %s %s: %s",
                event["reason"],
                event["involvedObject"].get("kind"),
                event["involvedObject"].get("name"),
                error,
            )

    async def close(self) -> None:
        """Wait for the Events still being posted (operator cleanup)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def post(
    poster: EventPoster | None,
    body: Mapping[str, Any],
    type_: str,
    reason: str,
    message: str,
) -> None:
    """Post through the operator's :class:`EventPoster` (kopf.event before it is started)."""
    if poster is not None:
        poster.post(body, type_, reason, message)
    else:
        kopf.event(cast(Any, body), type=type_, reason=reason, message=message)
