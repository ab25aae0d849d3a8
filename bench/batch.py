"""Benchmark: a batch on a simulated fleet with churn, through the real dispatch core.

The dispatcher's pure core (:class:`tokenfleet.batch.core.DispatchCore`: units, leases, the car
eligibility rule, reissue, exactly-once acceptance) runs in virtual time against a simulated
fleet: racks that stay, and cars that arrive, announce a departure, and leave at their departure
less the drain lead (the operator drains them then); some cars unplug without warning before
that. Each replica serves its leased units one request after another at its declared tokens/s;
a car that unplugs loses the request it was generating (thrown-away tokens) and its unit's
unfinished part is reissued.

Prints one JSON document (``--json`` for the machine-readable form only):

* ``tokens_per_second``: tokens kept ÷ makespan;
* ``utilization``: tokens kept ÷ the declared tokens/s of the replicas placed while the batch
  ran, integrated over their time in the fleet;
* ``redundant_work_ratio``: tokens generated and thrown away ÷ tokens kept;
* ``lost_results`` / ``duplicate_results``: valid requests without exactly one answer;
* ``deadline_met``: every request answered within the completion window.

No real servers: this measures the dispatch policy; ``e2e/test_batch.py`` runs the same core in
``tokenfleet dispatcher`` against real tritonservers and the real object store.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tokenfleet.batch.core import DispatchCore, DispatchSettings, Lease, Slot, Verdict


@dataclass
class Running:
    """A lease being served: which request is in progress and since when."""

    lease: Lease
    position: int = 0
    started: float = 0.0


@dataclass
class Sim:
    requests: int
    racks: int
    rack_tps: float
    cars: int
    car_tps: float
    drain_lead: float
    window: float
    seed: int
    unplug_share: float
    unit_size: int
    rng: random.Random = field(init=False)
    events: list[tuple[float, int, str, Any]] = field(default_factory=list)
    seq: int = 0
    slots: dict[str, Slot] = field(default_factory=dict)
    running: dict[str, Running] = field(default_factory=dict)
    answers: list[int] = field(default_factory=list)
    kept_tokens: int = 0
    wasted_tokens: float = 0.0
    capacity_token_seconds: float = 0.0
    present_since: dict[str, float] = field(default_factory=dict)
    car_violations: int = 0
    churn: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def push(self, at: float, kind: str, data: Any) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, data))

    def add(self, slot: Slot, now: float) -> None:
        self.slots[slot.key] = slot
        self.present_since[slot.key] = now

    def remove(self, key: str, now: float) -> None:
        slot = self.slots.pop(key, None)
        if slot is not None:
            since = self.present_since.pop(key)
            self.capacity_token_seconds += (now - since) * slot.tokens_per_second

    def run(self) -> dict[str, Any]:
        tokens = {i: self.rng.randint(16, 256) for i in range(self.requests)}
        core = DispatchCore(
            tokens=tokens,
            settings=DispatchSettings(
                unit_size=self.unit_size, max_window=1, yield_to_online=False
            ),
        )
        for r in range(self.racks):
            self.add(Slot(f"rack{r}", f"rack{r}", "", "m", "Rack", self.rack_tps), 0.0)
        # half the cars are parked at the start, the rest arrive during the run; each stays
        # 1.2 .. 6 drain leads, so most leave while the batch runs
        for c in range(self.cars):
            arrive = self.rng.uniform(0, 400) if c >= self.cars // 2 else 0.0
            stay = self.rng.uniform(1.2 * self.drain_lead, 6 * self.drain_lead)
            leave_by = arrive + stay - self.drain_lead
            self.push(arrive, "arrive", (f"car{c}", leave_by))
            if self.rng.random() < self.unplug_share:  # unplugs without warning
                self.push(self.rng.uniform(arrive, leave_by), "unplug", f"car{c}")
            self.push(leave_by, "leave", f"car{c}")
        now = 0.0
        self._schedule(core, now)
        while self.events and not core.done():
            now, _, kind, data = heapq.heappop(self.events)
            if kind == "arrive":
                name, leave_by = data
                if leave_by > now:
                    self.churn["arrived"] += 1
                    self.add(Slot(name, name, "", "m", "Vehicle", self.car_tps, 0.0, leave_by), now)
            elif kind in ("leave", "unplug"):
                if str(data) in self.slots:
                    self.churn["departed" if kind == "leave" else "unplugged"] += 1
                self._lose(str(data), now)
                self.remove(str(data), now)
            elif kind == "done" and not self._done(core, data, tokens, now):
                continue  # the lease was revoked: nothing arrives from a car that left
            for lease_id in core.revoke(list(self.slots.values()), now):
                for key, run in list(self.running.items()):
                    if run.lease.id == lease_id:
                        self._lose(key, now)
            self._schedule(core, now)
        for key in list(self.slots):
            self.remove(key, now)
        counts = Counter(self.answers)
        lost = sum(1 for i in tokens if counts[i] == 0)
        duplicates = sum(c - 1 for c in counts.values() if c > 1)
        return {
            "requests": self.requests,
            "tokens_kept": self.kept_tokens,
            "makespan_s": round(now, 1),
            "tokens_per_second": round(self.kept_tokens / max(now, 1e-9), 1),
            "utilization": round(self.kept_tokens / max(self.capacity_token_seconds, 1e-9), 4),
            "redundant_work_ratio": round(self.wasted_tokens / max(self.kept_tokens, 1), 4),
            "lost_results": lost,
            "duplicate_results": duplicates,
            "deadline_met": lost == 0 and now <= self.window,
            "reissued_requests": core.reissued,
            "car_leases_past_leave_by": self.car_violations,
            "cars_during_run": dict(self.churn),
        }

    def _done(self, core: DispatchCore, data: Any, tokens: dict[int, int], now: float) -> bool:
        """One request of a running lease finished; False when the lease was revoked."""
        key, lease_id, position = data
        run = self.running.get(key)
        if run is None or run.lease.id != lease_id or run.position != position:
            return False
        index = run.lease.indices[position]
        if core.accept(lease_id, index) is Verdict.ACCEPTED:
            self.answers.append(index)
            self.kept_tokens += tokens[index]
        run.position += 1
        run.started = now
        if run.position >= len(run.lease.indices):
            del self.running[key]
            core.release(lease_id)
        else:
            self._next(run, key, tokens)
        return True

    def _lose(self, key: str, now: float) -> None:
        run = self.running.pop(key, None)
        if run is None:
            return
        slot = run.lease.slot
        self.wasted_tokens += (now - run.started) * slot.tokens_per_second

    def _next(self, run: Running, key: str, tokens: dict[int, int]) -> None:
        index = run.lease.indices[run.position]
        seconds = tokens[index] / run.lease.slot.tokens_per_second
        self.push(run.started + seconds, "done", (key, run.lease.id, run.position))

    def _schedule(self, core: DispatchCore, now: float) -> None:
        idle = [s for k, s in self.slots.items() if k not in self.running]
        for lease in core.plan(idle, now):
            key = lease.slot.key
            if lease.slot.leave_by is not None and now + lease.expected > lease.slot.leave_by:
                self.car_violations += 1
            run = Running(lease, 0, now)
            self.running[key] = run
            self._next(run, key, dict(core.tokens))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--racks", type=int, default=2)
    parser.add_argument("--rack-tps", type=float, default=400.0)
    parser.add_argument("--cars", type=int, default=40)
    parser.add_argument("--car-tps", type=float, default=40.0)
    parser.add_argument("--drain-lead", type=float, default=120.0)
    parser.add_argument("--unplug-share", type=float, default=0.1)
    parser.add_argument("--unit-size", type=int, default=8)
    parser.add_argument("--window", type=float, default=3600.0, help="completion window, s")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    result = Sim(
        requests=args.requests,
        racks=args.racks,
        rack_tps=args.rack_tps,
        cars=args.cars,
        car_tps=args.car_tps,
        drain_lead=args.drain_lead,
        window=args.window,
        seed=args.seed,
        unplug_share=args.unplug_share,
        unit_size=args.unit_size,
    ).run()
    result["wall_s"] = round(time.perf_counter() - t0, 2)
    result["params"] = {k: v for k, v in vars(args).items() if k != "json"}
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
