"""The dispatch core (pure: no I/O, no clock of its own; every call takes ``now``).

The batch's requests are grouped into **work units**; a unit is **leased** to one replica (a
:class:`Slot`) with a deadline. Rules:

* **Car eligibility** (:func:`car_can_finish`): a unit goes to a car only when the car's
  remaining parked time — its departure less its pool's drain lead (``Slot.leave_by``) — covers
  the unit's expected duration at that replica's tokens/s, times a safety factor. A car with
  unknown departure gets nothing. A unit too long for a car is cut to the part that fits.
* **Reissue** (:meth:`DispatchCore.revoke`, :meth:`DispatchCore.release`): a lease whose
  replica left the ready set (a car unplugged or departed, a replica moved), whose car must
  leave before the lease's work can end, or whose deadline passed, is revoked; the unfinished
  part of its unit goes back to the front of the queue.
* **Exactly once** (:meth:`DispatchCore.accept`): a request's outcome is accepted once, from the
  lease it is currently leased under; a result of a revoked lease (late) or of a request already
  answered (duplicate) is discarded and counted.
* **Yield to online traffic** (Background priority, :meth:`DispatchCore.observe`): each replica
  has a window of units in flight; it halves when the replica's measured tokens/s per request
  falls below ``slow_ratio`` of its declared figure and grows by one while it keeps pace.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "DispatchCore",
    "DispatchSettings",
    "Lease",
    "Slot",
    "Verdict",
    "car_can_finish",
    "expected_seconds",
]


@dataclass(frozen=True, slots=True)
class Slot:
    """A replica the dispatcher may lease units to (what the EndpointSlices and Nodes say)."""

    key: str
    """Identity of the replica: node, runtime endpoint and model."""
    node: str
    endpoint: str
    """HOST:PORT of the runtime's HTTP port."""
    model: str
    """Triton model name."""
    target: str
    """Rack or Vehicle."""
    tokens_per_second: float
    """The variant's declared tokens/s."""
    watts: float = 0.0
    """The variant's declared power draw while serving."""
    leave_by: float | None = None
    """Cars: departure time less the pool's drain lead (epoch seconds); ``None`` when unknown.
    Racks: ignored."""


def expected_seconds(tokens: float, tokens_per_second: float) -> float:
    """How long ``tokens`` take at ``tokens_per_second`` (one request after another)."""
    return tokens / max(tokens_per_second, 1e-9)


def car_can_finish(slot: Slot, seconds: float, now: float, safety: float = 1.5) -> bool:
    """The car eligibility rule: racks always; a car only when ``now + safety x seconds`` is
    no later than its departure less the drain lead (unknown departure: never)."""
    if slot.target != "Vehicle":
        return True
    if slot.leave_by is None or not math.isfinite(slot.leave_by):
        return False
    return now + safety * seconds <= slot.leave_by


@dataclass(frozen=True)
class DispatchSettings:
    unit_size: int = 8
    """Requests per work unit."""
    safety: float = 1.5
    """Factor on a unit's expected duration in the car eligibility rule."""
    deadline_factor: float = 3.0
    """A lease's deadline: issue time + factor x expected duration + ``deadline_slack``."""
    deadline_slack: float = 10.0
    max_window: int = 4
    """Units in flight per replica at most."""
    yield_to_online: bool = True
    """Background priority: the AIMD window; Standard: always ``max_window``."""
    slow_ratio: float = 0.5
    """Measured / declared tokens/s below which a replica counts as busy with online work."""


@dataclass
class Lease:
    """A unit leased to one replica."""

    id: int
    slot: Slot
    indices: tuple[int, ...]
    issued: float
    deadline: float
    expected: float
    """Expected duration at the slot's tokens/s, seconds."""
    pending: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.pending:
            self.pending = set(self.indices)


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    LATE = "late"
    """The lease was revoked or released (the request was reissued or is queued again)."""
    DUPLICATE = "duplicate"
    """The request already has its outcome."""


@dataclass
class DispatchCore:
    """Units, leases and answered requests of one batch.

    ``tokens`` maps each request still to serve (its input line index) to its expected tokens;
    ``answered`` are the line indices whose outcome is already committed (resumed from the store).
    """

    tokens: Mapping[int, int]
    answered: set[int] = field(default_factory=set)
    settings: DispatchSettings = field(default_factory=DispatchSettings)
    queue: deque[tuple[int, ...]] = field(default_factory=deque)
    leases: dict[int, Lease] = field(default_factory=dict)
    windows: dict[str, float] = field(default_factory=dict)
    next_id: int = 1
    reissued: int = 0
    late: int = 0
    duplicates: int = 0
    wasted_tokens: int = 0
    """Expected tokens of discarded results and of abandoned (revoked) in-flight requests."""

    def __post_init__(self) -> None:
        if not self.queue:
            todo = sorted(i for i in self.tokens if i not in self.answered)
            size = max(self.settings.unit_size, 1)
            self.queue.extend(tuple(todo[k : k + size]) for k in range(0, len(todo), size))

    # ---- queries --------------------------------------------------------------------------------

    def done(self) -> bool:
        return not self.queue and not self.leases

    def remaining(self) -> list[int]:
        """Requests without an outcome (queued or leased), sorted."""
        out = {i for unit in self.queue for i in unit}
        for lease in self.leases.values():
            out |= lease.pending
        return sorted(out - self.answered)

    def remaining_tokens(self) -> int:
        return sum(self.tokens.get(i, 0) for i in self.remaining())

    def in_flight(self, slot_key: str) -> int:
        return sum(1 for lease in self.leases.values() if lease.slot.key == slot_key)

    def window(self, slot_key: str) -> int:
        if not self.settings.yield_to_online:
            return self.settings.max_window
        return max(1, int(self.windows.get(slot_key, float(self.settings.max_window))))

    # ---- leasing --------------------------------------------------------------------------------

    def _fit(self, slot: Slot, unit: tuple[int, ...], now: float) -> int:
        """How many of ``unit``'s first requests ``slot`` can take (cars: before leaving)."""
        if slot.target != "Vehicle":
            return len(unit)
        total = 0.0
        fit = 0
        for index in unit:
            total += self.tokens.get(index, 0)
            if not car_can_finish(
                slot, expected_seconds(total, slot.tokens_per_second), now, self.settings.safety
            ):
                break
            fit += 1
        return fit

    def plan(self, slots: Iterable[Slot], now: float) -> list[Lease]:
        """Lease queued units to slots with room in their window; returns the new leases.

        Slots are filled fastest first; a car takes only the part of a unit it can finish."""
        new: list[Lease] = []
        ordered = sorted(slots, key=lambda s: (-s.tokens_per_second, s.key))
        progress = True
        while self.queue and progress:
            progress = False
            for slot in ordered:
                if not self.queue:
                    break
                if self.in_flight(slot.key) >= self.window(slot.key):
                    continue
                unit = self.queue[0]
                fit = self._fit(slot, unit, now)
                if fit == 0:
                    continue
                self.queue.popleft()
                if fit < len(unit):
                    self.queue.appendleft(unit[fit:])
                new.append(self._lease(slot, unit[:fit], now))
                progress = True
        return new

    def _lease(self, slot: Slot, indices: tuple[int, ...], now: float) -> Lease:
        tokens = sum(self.tokens.get(i, 0) for i in indices)
        expected = expected_seconds(tokens, slot.tokens_per_second)
        s = self.settings
        lease = Lease(
            id=self.next_id,
            slot=slot,
            indices=indices,
            issued=now,
            deadline=now + s.deadline_factor * expected + s.deadline_slack,
            expected=expected,
        )
        self.next_id += 1
        self.leases[lease.id] = lease
        return lease

    # ---- outcomes -------------------------------------------------------------------------------

    def accept(self, lease_id: int, index: int) -> Verdict:
        """May the outcome of request ``index`` from lease ``lease_id`` be committed?

        Accepted at most once per request, and only from the lease it is currently under."""
        if index in self.answered:
            self.duplicates += 1
            self.wasted_tokens += self.tokens.get(index, 0)
            return Verdict.DUPLICATE
        lease = self.leases.get(lease_id)
        if lease is None or index not in lease.pending:
            self.late += 1
            self.wasted_tokens += self.tokens.get(index, 0)
            return Verdict.LATE
        lease.pending.discard(index)
        self.answered.add(index)
        return Verdict.ACCEPTED

    def release(self, lease_id: int) -> list[int]:
        """The lease's work ended (all answered, or its replica failed it): unanswered requests
        go back to the front of the queue. Returns them."""
        lease = self.leases.pop(lease_id, None)
        if lease is None:
            return []
        back = tuple(sorted(lease.pending - self.answered))
        if back:
            self.queue.appendleft(back)
            self.reissued += len(back)
        return list(back)

    def revoke(self, slots: Iterable[Slot], now: float) -> list[int]:
        """Revoke leases whose replica is gone, whose car must leave before the lease's work
        can end, or whose deadline passed; their unanswered requests are queued again.
        Returns the revoked lease ids (their requests in flight are to be abandoned)."""
        current = {s.key: s for s in slots}
        revoked: list[int] = []
        for lease in list(self.leases.values()):
            slot = current.get(lease.slot.key)
            gone = slot is None
            leaving = False
            if slot is not None and slot.target == "Vehicle":
                left = sum(self.tokens.get(i, 0) for i in lease.pending)
                finish = now + expected_seconds(left, slot.tokens_per_second)
                leaving = slot.leave_by is None or finish > slot.leave_by
            if gone or leaving or now > lease.deadline:
                self.wasted_tokens += sum(self.tokens.get(i, 0) for i in lease.pending)
                self.release(lease.id)
                revoked.append(lease.id)
        return revoked

    def abandon(self) -> list[int]:
        """Stop everything (expired window, cancel): returns the requests without an outcome."""
        left = self.remaining()
        self.queue.clear()
        self.leases.clear()
        return left

    # ---- yielding to online traffic -------------------------------------------------------------

    def observe(self, slot: Slot, tokens: int, seconds: float) -> None:
        """A request of ``tokens`` took ``seconds`` on ``slot``: adjust its window (AIMD)."""
        if not self.settings.yield_to_online or tokens <= 0 or seconds <= 0:
            return
        current = self.windows.get(slot.key, float(self.settings.max_window))
        if tokens / seconds < self.settings.slow_ratio * slot.tokens_per_second:
            self.windows[slot.key] = max(1.0, current / 2)
        else:
            self.windows[slot.key] = min(float(self.settings.max_window), current + 1)

    # ---- deadline -------------------------------------------------------------------------------

    def eta_seconds(self, tokens_per_second: float) -> float | None:
        """Seconds until the last request is answered at ``tokens_per_second`` (None: no rate)."""
        left = self.remaining_tokens()
        if left == 0:
            return 0.0
        if tokens_per_second <= 0:
            return None
        return left / tokens_per_second


def needed_tokens_per_second(remaining_tokens: int, now: float, expires_at: float) -> float:
    """The rate that answers ``remaining_tokens`` by ``expires_at`` (inf when already past)."""
    if remaining_tokens <= 0:
        return 0.0
    left = expires_at - now
    if left <= 0:
        return math.inf
    return remaining_tokens / left
