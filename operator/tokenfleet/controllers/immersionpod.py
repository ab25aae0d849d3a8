"""ImmersionPod handlers: one kopf timer per tank drives its :class:`TankPoller`.

The poller (``tankpoller.py``: Redfish polls, the leak latch and its acknowledgement, the write
deadband) and the status (``tankstatus.py``: one pure function per condition) hold the logic;
this module wires them to kopf and to the operator context (the Redfish HTTP session, the
credentials Secret through the Kubernetes writer, the clock, the planner's tank readings).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import kopf

from tokenfleet.api.models import GROUP, VERSION
from tokenfleet.controllers import events
from tokenfleet.controllers.context import OperatorContext, context_of
from tokenfleet.controllers.fleet import FleetView
from tokenfleet.controllers.kube import KubeWriter
from tokenfleet.controllers.nodes import select_nodes
from tokenfleet.controllers.tankpoller import TankPoller
from tokenfleet.controllers.tankstatus import ACK_ANNOTATION
from tokenfleet.telemetry.immersion import (
    RedfishCredentials,
    RedfishError,
    credentials_from_secret,
)
from tokenfleet.telemetry.node import NodeInfo, NodeRole

TICK_SECONDS: Final = 1.0
"""How often each tank's timer ticks (the poller polls every ``pollIntervalSeconds``)."""


async def load_credentials(
    kube: KubeWriter, namespace: str, name: str, session: bool
) -> RedfishCredentials:
    """Read a tank's credentials Secret from the operator's namespace (``--runtime-namespace``,
    the chart's release namespace). Raises :class:`RedfishError` naming the Secret."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    where = f"{namespace}/{name}"
    try:
        secret = await kube.read_secret(namespace, name)
    except ApiException as error:
        raise RedfishError(
            f"credentials Secret {where}: HTTP {error.status} {error.reason}"
        ) from error
    except HTTPError as error:
        raise RedfishError(f"credentials Secret {where}: {error}") from error
    if secret is None:
        raise RedfishError(f"credentials Secret {where} not found")
    try:
        return credentials_from_secret(secret, session=session, where=where)
    except ValueError as error:
        raise RedfishError(str(error)) from error


def count_tank(spec: Mapping[str, Any], fleet: FleetView) -> tuple[int, int]:
    """(rack nodes selected by ``spec.nodeSelector``, Loaded replicas on them)."""
    selector = spec.get("nodeSelector") or {}
    nodes: list[NodeInfo] = [
        n
        for n in select_nodes(
            selector, by_name=fleet.nodes_by_name, by_tank=fleet.nodes_by_tank, role=NodeRole.RACK
        )
        if not n.deleting
    ]
    serving = fleet.serving_by_node
    replicas = sum(r.replicas for n in nodes for r in serving.get(n.name, ()))
    return len(nodes), replicas


POLLER_MEMO_KEY: Final = "tokenfleet_tank_poller"
"""The key of a tank's :class:`TankPoller` in its own (per-object) kopf memo."""


def _new_poller(context: OperatorContext, name: str, body: kopf.Body) -> TankPoller:
    def warn(reason: str, message: str) -> None:
        # cluster-scoped: posted so that `kubectl describe immersionpod` shows it
        events.post(context.events, body, "Warning", reason, message)

    def info(reason: str, message: str) -> None:
        # kopf.info would be dropped at posting.level WARNING: this one is for people
        events.post(context.events, body, "Normal", reason, message)

    async def credentials(secret: str, session: bool) -> RedfishCredentials:
        return await load_credentials(
            context.kube, context.config.runtime_namespace, secret, session
        )

    return TankPoller(
        name=name,
        warn=warn,
        info=info,
        clock=context.clock.now,
        monotonic=context.clock.monotonic,
        session=context.http.get,
        credentials=credentials,
    )


@kopf.timer(GROUP, VERSION, "immersionpods", interval=TICK_SECONDS, id="immersionpod_telemetry")
async def immersionpod_telemetry(
    name: str,
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    memo: kopf.Memo,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    """Poll (when due) and patch status only on a meaningful change."""
    if meta.get("deletionTimestamp"):
        return
    context = context_of(memo)
    if not context.fleet.nodes_synced:
        return  # the node watch has not listed the Nodes yet: the next tick counts them
    poller = memo.get(POLLER_MEMO_KEY)
    if not isinstance(poller, TankPoller):
        poller = _new_poller(context, name, body)
        memo[POLLER_MEMO_KEY] = poller
    generation = meta.get("generation")
    nodes, replicas = count_tank(spec, context.fleet)
    ack = (meta.get("annotations") or {}).get(ACK_ANNOTATION)
    desired = await poller.tick(
        spec=spec,
        status=status,
        generation=int(generation) if generation is not None else None,
        nodes=nodes,
        replicas=replicas,
        ack=None if ack is None else str(ack),
        ack_version=meta.get("resourceVersion"),
    )
    if desired is not None:
        for key, value in desired.items():
            patch.status[key] = value
    reading = poller.outcome.reading
    if reading is not None:  # the planner's freshness, without a status write per poll
        context.planner.record_tank_reading(name, reading.observed_at.timestamp())
    if ack is not None and poller.handled_ack == (str(ack), meta.get("resourceVersion")):
        # handled (cleared, refused or nothing latched): the next leak latches again, and a
        # refused acknowledgement must be given again once the detectors read OK. Not handled
        # (invalid spec, unsupported telemetry source): left in place for when it can be.
        patch.metadata.annotations[ACK_ANNOTATION] = None


@kopf.on.delete(GROUP, VERSION, "immersionpods", optional=True, id="immersionpod_forget")
def immersionpod_forget(name: str, memo: kopf.Memo, **_: Any) -> None:
    poller = memo.get(POLLER_MEMO_KEY)
    if isinstance(poller, TankPoller):
        poller.forget()
    context_of(memo).planner.forget_tank(name)
