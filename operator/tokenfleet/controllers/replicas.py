"""One job's replicas and their state machine (pure: no I/O, the time is passed in).

A :class:`Replica` is one entry of the job's decision record, ``status.placements``, kept in
memory by the job's worker. The worker does the Triton and Kubernetes I/O; every change of a
replica's state goes through a function here, which returns what the worker must do about it
(report a failure, post an Event). The states are the API's :class:`PlacementState`; a replica
that is gone from its runtime is dropped from the record (:attr:`Replica.gone`).

Transitions::

    (new)     --plan wants it-------------------------> Loading (needs_load)
    Loading   --model READY (observed or loaded)------> Loaded
    Loading   --model failed to load / no runtime-----> Failed   (this job backs off that node)
    Loading   --model absent or unloaded--------------> Loading  (needs_load: load again)
    Loaded    --model gone from the runtime-----------> Loading  (Reloading, needs_load)
    Loaded    --runtime unreachable N times in a row--> Failed   (RuntimeFailed: re-placed)
    Loading/Loaded --plan removed it------------------> Unloading
    Unloading --model still READY/LOADING-------------> Unloading (needs_unload: unload again)
    Unloading --model gone, or no runtime left--------> gone
    Failed    --backed off and not wanted-------------> pruned
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from tokenfleet.api.conditions import rfc3339
from tokenfleet.api.models import PlacementRecord, PlacementState, Target
from tokenfleet.clock import Clock
from tokenfleet.serving.runtime import ModelState, ModelStatus

NodeKey = tuple[str, str]
"""(node, variant): one replica of a job."""

LOADING: Final = PlacementState.LOADING
LOADED: Final = PlacementState.LOADED
UNLOADING: Final = PlacementState.UNLOADING
FAILED: Final = PlacementState.FAILED

HOLDING: Final[frozenset[PlacementState]] = frozenset({LOADING, LOADED})
"""The replica holds its place (the planner's current placements, the make-before-break set)."""
ON_RUNTIME: Final[frozenset[PlacementState]] = frozenset({LOADING, LOADED, UNLOADING})
"""The model is, or is about to be, or still is on the runtime (observed, probed)."""
ROUTED: Final[frozenset[PlacementState]] = frozenset({LOADED, UNLOADING})
"""In the EndpointSlice: ready (Loaded) or draining (Unloading)."""
SERVING: Final[frozenset[PlacementState]] = frozenset({LOADED})
"""Serving requests: counted in readyReplicas and served tokens/s."""

#: a duplicated (node, variant) in the record collapses to one entry: the most alive wins
_RANK: Final = {LOADED: 0, LOADING: 1, UNLOADING: 2, FAILED: 3}
#: the wire name of each PlacementRecord field (the API model is the one spelling)
_WIRE: Final = {name: field.alias or name for name, field in PlacementRecord.model_fields.items()}
MESSAGE_LIMIT: Final = 1024

# reasons the operator records on a replica (the planner's eviction reasons come on top)
RUNTIME_FAILED: Final = "RuntimeFailed"
LOAD_FAILED: Final = "LoadFailed"
NO_RUNTIME: Final = "NoRuntime"
RELOADING: Final = "Reloading"
PLACED: Final = "Placed"
REPLACEMENT: Final = "Replacement"
ADOPTED: Final = "Adopted"


def short(text: str, limit: int = 1000) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Replica:
    """One record entry (``status.placements[]``), kept in memory by the job's worker."""

    node: str
    variant: str
    target: str
    state: PlacementState
    since: str
    pool: str | None = None
    tank: str | None = None
    reason: str | None = None
    message: str | None = None
    # not persisted:
    failed_at: float | None = None
    """Monotonic time it became Failed."""
    removal_wanted_at: float | None = None
    """Monotonic time the plan first dropped it (make-before-break waits from there)."""
    observe_failures: int = 0
    needs_load: bool = False
    needs_unload: bool = False
    gone: bool = False
    """No longer on its runtime: dropped from the record at the end of the step."""
    placed: tuple[str | None, str | None] | None = None
    """The placement's (reason, message) while the node's model cache fetches or verifies the
    model (the replica says Fetching/Verifying meanwhile, then its placement reason again)."""

    @property
    def key(self) -> NodeKey:
        return (self.node, self.variant)

    def to_wire(self) -> dict[str, Any]:
        """The ``status.placements[]`` entry (keys spelled by the API's PlacementRecord)."""
        values: dict[str, Any] = {
            "node": self.node,
            "target": self.target,
            "pool": self.pool or None,
            "tank": self.tank or None,
            "variant": self.variant,
            "state": self.state.value,
            "since": self.since,
            "reason": self.reason or None,
            "message": short(self.message, MESSAGE_LIMIT) if self.message else None,
        }
        return {_WIRE[k]: v for k, v in values.items() if v is not None}

    def set_state(
        self, state: PlacementState, reason: str | None, message: str | None, *, clock: Clock
    ) -> None:
        if state != self.state:
            self.since = rfc3339(clock.now())
        self.state = state
        self.reason = reason
        self.message = message

    def fail(self, reason: str, message: str, *, clock: Clock) -> None:
        self.set_state(FAILED, reason, message, clock=clock)
        self.failed_at = clock.monotonic()
        self.needs_load = False


def from_wire(raw: Mapping[str, Any], clock: Clock) -> Replica | None:
    """A record entry read back from status; ``None`` for one without node, variant or a known
    state."""
    node, variant, state = raw.get("node"), raw.get("variant"), raw.get("state")
    if not node or not variant or state not in _RANK:
        return None
    placement_state = PlacementState(state)
    return Replica(
        node=str(node),
        variant=str(variant),
        target=str(raw.get("target") or Target.RACK.value),
        state=placement_state,
        since=str(raw.get("since") or rfc3339(clock.now())),
        pool=raw.get("pool"),
        tank=raw.get("tank"),
        reason=raw.get("reason"),
        message=raw.get("message"),
        failed_at=clock.monotonic() if placement_state is FAILED else None,
    )


def read_record(raw: Iterable[Mapping[str, Any]], clock: Clock) -> list[Replica]:
    """The record from ``status.placements``: malformed entries dropped, a duplicated
    (node, variant) collapsed to its most alive entry, sorted by key."""
    entries = [e for e in (from_wire(r, clock) for r in raw) if e is not None]
    unique: dict[NodeKey, Replica] = {}
    for e in sorted(entries, key=lambda e: _RANK[e.state]):
        unique.setdefault(e.key, e)
    return sorted(unique.values(), key=lambda e: e.key)


def new_replica(
    *,
    node: str,
    variant: str,
    target: str,
    pool: str | None,
    tank: str | None,
    clock: Clock,
    sources: list[str] | None = None,
) -> Replica:
    """A replica the plan wants: Loading, to be loaded (``sources``: the replicas it replaces)."""
    return Replica(
        node=node,
        variant=variant,
        target=target,
        pool=pool,
        tank=tank,
        state=LOADING,
        since=rfc3339(clock.now()),
        reason=REPLACEMENT if sources else PLACED,
        message=("replaces " + ", ".join(sources)) if sources else None,
        needs_load=True,
    )


def adopted_replica(
    *, node: str, variant: str, target: str, pool: str | None, tank: str | None, clock: Clock
) -> Replica:
    """A model of this job found loaded on a runtime without a record entry, which the plan
    wants there."""
    return Replica(
        node=node,
        variant=variant,
        target=target,
        pool=pool,
        tank=tank,
        state=LOADED,
        since=rfc3339(clock.now()),
        reason=ADOPTED,
        message="found loaded on the runtime without a record entry",
    )


# ---- observing a replica on its runtime -----------------------------------------------------


class Observed(enum.Enum):
    """What the worker must do after an observation, besides recording the new state."""

    NOTHING = "nothing"
    RUNTIME_FAILED = "runtime-failed"
    """Report the node's runtime as failed and post a Warning ``RuntimeFailed``."""
    LOAD_FAILED = "load-failed"
    """Report a load failure of this job on that node (the model's failure, not the runtime's)."""
    LOST = "lost"
    """Post a Warning ``ReplicaLost``: the runtime lost a Loaded model, it is loaded again."""


def observed_without_runtime(replica: Replica) -> None:
    """The node has no runtime to ask: an Unloading replica has nothing left to unload."""
    if replica.state is UNLOADING:
        replica.gone = True


def observed_error(
    replica: Replica, error: str, *, failures_to_fail: int, clock: Clock
) -> Observed:
    """The runtime did not answer. A Loaded replica fails after ``failures_to_fail`` in a row."""
    replica.observe_failures += 1
    if replica.state is LOADED and replica.observe_failures >= failures_to_fail:
        replica.fail(RUNTIME_FAILED, error, clock=clock)
        return Observed.RUNTIME_FAILED
    return Observed.NOTHING


def observed(replica: Replica, status: ModelStatus, *, clock: Clock) -> Observed:
    """The runtime reported the model's state: apply it to the replica."""
    replica.observe_failures = 0
    if replica.state is LOADING:
        return _observed_loading(replica, status, clock)
    if replica.state is LOADED:
        return _observed_loaded(replica, status, clock)
    if replica.state is UNLOADING:
        _observed_unloading(replica, status)
    return Observed.NOTHING


def _observed_loading(replica: Replica, status: ModelStatus, clock: Clock) -> Observed:
    state = status.state
    if state is ModelState.READY:
        replica.set_state(LOADED, replica.reason or LOADED.value, replica.message, clock=clock)
        replica.needs_load = False
    elif state is ModelState.LOADING:
        replica.needs_load = False
    elif state is ModelState.UNAVAILABLE and status.reason not in ("", "unloaded"):
        replica.fail(LOAD_FAILED, status.reason, clock=clock)
        return Observed.LOAD_FAILED
    else:
        replica.needs_load = True  # e.g. after a restart mid-load
    return Observed.NOTHING


def _observed_loaded(replica: Replica, status: ModelStatus, clock: Clock) -> Observed:
    if status.state in (ModelState.READY, ModelState.LOADING):
        return Observed.NOTHING
    # the runtime lost the model (restarted, or someone unloaded it): load again
    message = f"model was {status.state.value} on the runtime"
    replica.set_state(LOADING, RELOADING, message, clock=clock)
    replica.needs_load = True
    return Observed.LOST


def _observed_unloading(replica: Replica, status: ModelStatus) -> None:
    if status.state in (ModelState.READY, ModelState.LOADING):
        replica.needs_unload = True  # e.g. killed before the unload call: again
    elif status.state is ModelState.UNLOADING:
        replica.needs_unload = False
    else:
        replica.gone = True


# ---- loading, unloading, pruning ----------------------------------------------------------


def loaded(replica: Replica, *, clock: Clock) -> None:
    """The load call returned and the model is ready."""
    replica.needs_load = False
    replica.set_state(LOADED, replica.reason, replica.message, clock=clock)


def unloading(replica: Replica, reason: str, moved_to: str | None, *, clock: Clock) -> None:
    """The plan removed the replica: it leaves the ready set before the unload call."""
    message = f"moved to {moved_to}" if moved_to else "removed by the plan"
    replica.set_state(UNLOADING, reason, message, clock=clock)


def due_for_removal(
    victims: Iterable[Replica], *, replacement_loading: bool, timeout: float, now: float
) -> list[Replica]:
    """Make-before-break: the replicas the plan dropped that may go now — all of them once no
    replacement is loading, else those that waited ``timeout`` seconds (monotonic ``now``)."""
    due: list[Replica] = []
    for replica in victims:
        if replica.removal_wanted_at is None:
            replica.removal_wanted_at = now
        if not replacement_loading or now - replica.removal_wanted_at >= timeout:
            due.append(replica)
    return due


def prune_failed(
    record: Iterable[Replica], wanted: Iterable[NodeKey], *, backoff: float, now: float
) -> list[Replica]:
    """The record without Failed replicas the plan no longer wants once their back-off passed
    (monotonic ``now``)."""
    keep = set(wanted)
    return [
        r
        for r in record
        if not (r.state is FAILED and r.key not in keep and now - (r.failed_at or now) >= backoff)
    ]


def in_flight(record: Iterable[Replica]) -> bool:
    """A load or unload is under way, or a runtime just missed a check: look again soon."""
    return any(r.state in (LOADING, UNLOADING) or r.observe_failures for r in record)
