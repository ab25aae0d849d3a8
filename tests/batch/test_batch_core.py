"""The pure dispatch core: car eligibility, leases, reissue, exactly-once acceptance, AIMD."""

from __future__ import annotations

import random

from tokenfleet.batch.core import (
    DispatchCore,
    DispatchSettings,
    Slot,
    Verdict,
    car_can_finish,
    needed_tokens_per_second,
)

RACK = Slot("rack", "rack", "127.0.0.1:1", "m-fp16", "Rack", tokens_per_second=40.0)


def car(name: str, leave_by: float | None, tps: float = 20.0) -> Slot:
    return Slot(name, name, "127.0.0.1:2", "m-int4", "Vehicle", tps, leave_by=leave_by)


def core(n: int, tokens: int = 10, **settings: object) -> DispatchCore:
    return DispatchCore(
        tokens=dict.fromkeys(range(n), tokens),
        settings=DispatchSettings(**settings),  # type: ignore[arg-type]
    )


def test_car_rule_departure_less_drain_lead_must_cover_the_unit() -> None:
    # 100 tokens at 20 tok/s: 5 s, x1.5 safety = 7.5 s
    assert car_can_finish(car("c", leave_by=1007.5), 5.0, now=1000.0)
    assert not car_can_finish(car("c", leave_by=1007.4), 5.0, now=1000.0)
    assert not car_can_finish(car("c", leave_by=None), 0.1, now=1000.0)  # unknown: never
    assert car_can_finish(RACK, 1e9, now=1000.0)  # racks do not leave


def test_a_car_about_to_leave_gets_nothing_and_a_short_stay_gets_part_of_a_unit() -> None:
    c = core(8, tokens=10, unit_size=8, max_window=1)
    # 10 tokens at 20 tok/s = 0.5 s each; 1.5 x -> 0.75 s per request; 2 s left fits 2
    leases = c.plan([car("leaving", leave_by=100.2), car("short", leave_by=102.0)], now=100.0)
    assert [(lease.slot.key, lease.indices) for lease in leases] == [("short", (0, 1))]
    assert list(c.queue) == [(2, 3, 4, 5, 6, 7)]
    for lease in leases:  # every lease on a car ends before it must leave
        assert lease.issued + 1.5 * lease.expected <= (lease.slot.leave_by or 0)


def test_revoked_lease_is_reissued_and_its_late_results_discarded() -> None:
    c = core(8, unit_size=4, max_window=1)
    (a, b) = c.plan([car("car", 1e9), RACK], now=0.0)
    assert {a.slot.key, b.slot.key} == {"car", "rack"}
    on_car = a if a.slot.key == "car" else b
    first = on_car.indices[0]
    assert c.accept(on_car.id, first) is Verdict.ACCEPTED
    # the car unplugs: it leaves the slot set
    assert c.revoke([RACK], now=1.0) == [on_car.id]
    assert c.reissued == 3
    assert c.queue[0] == tuple(sorted(set(on_car.indices) - {first}))
    # its in-flight requests answer late: discarded
    assert c.accept(on_car.id, on_car.indices[1]) is Verdict.LATE
    assert c.accept(on_car.id, first) is Verdict.DUPLICATE
    (again,) = c.plan([RACK, car("other", 1e9)], now=2.0)[:1]
    assert set(again.indices) == set(on_car.indices) - {first}


def test_departure_moved_earlier_revokes_and_deadline_passes_revokes() -> None:
    c = core(4, unit_size=4)
    (lease,) = c.plan([car("car", 1000.0)], now=0.0)
    assert c.revoke([car("car", 1000.0)], now=1.0) == []
    assert c.revoke([car("car", 1.5)], now=1.0) == [lease.id]  # must leave before the work ends
    (lease,) = c.plan([RACK], now=2.0)
    assert c.revoke([RACK], now=lease.deadline - 0.01) == []
    assert c.revoke([RACK], now=lease.deadline + 0.01) == [lease.id]


def test_exactly_once_under_random_churn() -> None:
    rng = random.Random(7)
    n = 300
    c = core(n, tokens=5, unit_size=7)
    answered: list[int] = []
    now = 0.0
    cars = [car(f"car{i}", leave_by=rng.uniform(0, 500)) for i in range(6)]
    while not c.done():
        now += 1.0
        present = [RACK] + [s for s in cars if rng.random() < 0.7]
        c.revoke(present, now)
        c.plan(present, now)
        for lease in list(c.leases.values()):
            for index in list(lease.indices):
                if rng.random() < 0.5 and c.accept(lease.id, index) is Verdict.ACCEPTED:
                    answered.append(index)
            if not lease.pending:
                c.release(lease.id)
        # replay some results of old leases: all discarded
        for lease_id in rng.sample(range(1, c.next_id), k=min(3, c.next_id - 1)):
            for index in rng.sample(range(n), k=3):
                verdict = c.accept(lease_id, index)
                if verdict is Verdict.ACCEPTED:
                    answered.append(index)
        assert now < 10_000
    assert sorted(answered) == list(range(n))
    assert c.remaining() == []


def test_resume_skips_answered_requests() -> None:
    c = DispatchCore(tokens=dict.fromkeys(range(10), 3), answered={0, 1, 2, 9})
    assert c.remaining() == [3, 4, 5, 6, 7, 8]
    assert c.remaining_tokens() == 18


def test_background_window_halves_when_online_traffic_slows_a_replica() -> None:
    c = core(100, max_window=4)
    assert c.window("rack") == 4
    c.observe(RACK, tokens=10, seconds=1.0)  # 10 tok/s against 40 declared: busy
    assert c.window("rack") == 2
    c.observe(RACK, tokens=10, seconds=1.0)
    c.observe(RACK, tokens=10, seconds=1.0)
    assert c.window("rack") == 1
    c.observe(RACK, tokens=40, seconds=1.0)  # keeps pace again: grows by one
    assert c.window("rack") == 2
    standard = core(100, max_window=4, yield_to_online=False)
    standard.observe(RACK, tokens=1, seconds=10.0)
    assert standard.window("rack") == 4


def test_needed_rate_and_eta() -> None:
    assert needed_tokens_per_second(100, now=0.0, expires_at=50.0) == 2.0
    assert needed_tokens_per_second(0, now=60.0, expires_at=50.0) == 0.0
    c = core(4, tokens=10)
    assert c.eta_seconds(20.0) == 2.0
    assert c.eta_seconds(0.0) is None
