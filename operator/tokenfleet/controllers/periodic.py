"""One asyncio task that runs a round of work every ``interval`` seconds (the operator's timers).

The runtime prober (:mod:`tokenfleet.controllers.runtimehealth`) and the throughput meter
(:mod:`tokenfleet.controllers.throughput`) share it: an interval of 0 or less disables the task
(``start`` then starts nothing); the task first waits until the operator is ready (``wait_ready``,
e.g. ``Planner.wait_ready``), then runs a round, and sleeps what is left of the interval since
that round *started* (a round longer than the interval is followed at once by the next). A round
that raises is logged and the next one runs as usual: one failure never ends the task; only
``stop`` (cancellation) does.

The clock (monotonic readings) and the sleep are injected, so a test drives rounds without
waiting; nothing is kept at module level.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from tokenfleet.clock import Clock

__all__ = ["PeriodicTask"]


async def _ready_now() -> None:
    return None


class PeriodicTask:
    """``round`` every ``interval`` seconds in a task named ``name`` (see the module docstring).

    ``label`` names the work in the log line of a failed round (``"<label> round failed"``, on
    ``logger``, the owner's logger).
    """

    def __init__(
        self,
        name: str,
        interval: float,
        round_: Callable[[], Awaitable[object]],
        *,
        clock: Clock,
        logger: logging.Logger,
        label: str,
        wait_ready: Callable[[], Awaitable[object]] = _ready_now,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.interval = interval
        self._round = round_
        self._clock = clock
        self._log = logger
        self._label = label
        self._wait_ready = wait_ready
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        #: when the last round ended (monotonic; ``None``: none yet)
        self.last_round_monotonic: float | None = None
        self.rounds = 0

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    def start(self) -> None:
        """Start the task (once; nothing when disabled). Needs a running event loop."""
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Cancel the task and wait for it to end (a round in progress is cancelled)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        await self._wait_ready()
        while True:
            started = self._clock.monotonic()
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one round kill the task
                self._log.exception("%s round failed", self._label)
            self.rounds += 1
            self.last_round_monotonic = self._clock.monotonic()
            await self._sleep(max(0.0, started + self.interval - self._clock.monotonic()))
