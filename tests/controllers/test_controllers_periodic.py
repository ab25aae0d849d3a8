"""PeriodicTask: the timer loop the runtime prober and the throughput meter share (pure asyncio,
on a ManualClock and an injected sleep: no test waits for real time)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from tokenfleet.clock import ManualClock
from tokenfleet.controllers.periodic import PeriodicTask

log = logging.getLogger("test.periodic")


class Sleeper:
    """An injected sleep: records each request, advances the clock by it, and parks the task
    for good once ``rounds`` sleeps were asked (``done`` is set then)."""

    def __init__(self, clock: ManualClock, rounds: int) -> None:
        self.clock = clock
        self.rounds = rounds
        self.asked: list[float] = []
        self.done = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        self.clock.advance(seconds)
        if len(self.asked) >= self.rounds:
            self.done.set()
            await asyncio.Event().wait()  # until cancelled
        await asyncio.sleep(0)


def _task(
    round_: Callable[[], object],
    clock: ManualClock,
    sleeper: Sleeper,
    interval: float = 1.0,
    **kwargs: object,
) -> PeriodicTask:
    async def run() -> None:
        result = round_()
        if asyncio.iscoroutine(result):
            await result

    return PeriodicTask(
        "test-periodic",
        interval,
        run,
        clock=clock,
        logger=log,
        label="test",
        sleep=sleeper,
        **kwargs,  # type: ignore[arg-type]
    )


def test_disabled_starts_nothing() -> None:
    """Interval 0: no task, and start needs no event loop then."""
    clock = ManualClock(wall=0.0)
    task = _task(lambda: None, clock, Sleeper(clock, 1), interval=0)
    task.start()
    assert not task.enabled and task.task is None


async def test_sleeps_what_is_left_of_the_interval_since_the_round_started() -> None:
    clock = ManualClock(wall=0.0, mono=100.0)
    durations = iter([0.25, 1.5, 0.0])  # the second round outlasts the interval
    starts: list[float] = []

    def work() -> None:
        starts.append(clock.monotonic())
        clock.advance(next(durations))

    sleeper = Sleeper(clock, 3)
    task = _task(work, clock, sleeper, interval=1.0)
    task.start()
    await asyncio.wait_for(sleeper.done.wait(), 5)
    assert sleeper.asked == [0.75, 0.0, 1.0]
    assert starts == [100.0, 101.0, 102.5]
    assert task.rounds == 3 and task.last_round_monotonic == 102.5
    await task.stop()


async def test_waits_until_ready_before_the_first_round() -> None:
    clock = ManualClock(wall=0.0)
    ready = asyncio.Event()
    rounds: list[float] = []
    sleeper = Sleeper(clock, 1)
    task = _task(lambda: rounds.append(clock.monotonic()), clock, sleeper, wait_ready=ready.wait)
    task.start()
    for _ in range(5):
        await asyncio.sleep(0)
    assert rounds == [] and task.last_round_monotonic is None
    ready.set()
    await asyncio.wait_for(sleeper.done.wait(), 5)
    assert rounds == [0.0]
    await task.stop()


async def test_a_failing_round_is_logged_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock(wall=0.0)
    calls: list[int] = []

    def work() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("scrape blew up")

    sleeper = Sleeper(clock, 2)
    task = _task(work, clock, sleeper)
    with caplog.at_level(logging.ERROR, logger="test.periodic"):
        task.start()
        await asyncio.wait_for(sleeper.done.wait(), 5)
    assert calls == [0, 1]
    assert task.task is not None and not task.task.done()
    failed = [r for r in caplog.records if r.getMessage() == "test round failed"]
    assert len(failed) == 1 and failed[0].exc_info is not None
    await task.stop()


async def test_stop_cancels_a_round_in_progress_and_can_repeat() -> None:
    clock = ManualClock(wall=0.0)
    entered = asyncio.Event()
    cancelled: list[bool] = []

    async def work() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    task = _task(work, clock, Sleeper(clock, 1))
    task.start()
    started = task.task
    task.start()  # a second start keeps the one task
    assert task.task is started
    await asyncio.wait_for(entered.wait(), 5)
    await task.stop()
    assert cancelled == [True] and task.task is None
    assert started is not None and started.cancelled()
    assert task.rounds == 0  # a cancelled round is not a round
    await task.stop()  # stopping a stopped task is fine
