"""The clock every operator component reads: wall time, UTC now and a monotonic time.

One object (:class:`SystemClock` in the operator, a :class:`ManualClock` in tests) is built by
``tokenfleet run`` into the operator context and passed to whatever needs the time, so no
module reads ``time.time()`` itself and no test monkeypatches a module attribute.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """The three readings of time the operator uses."""

    def time(self) -> float:
        """Epoch seconds (wall clock: telemetry stamps, deadlines in the plan)."""
        ...

    def now(self) -> datetime:
        """The wall clock as an aware UTC datetime (status timestamps)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (back-offs, timeouts, ages in memory)."""
        ...


@dataclass(frozen=True)
class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass
class ManualClock:
    """A clock a test sets and advances (``wall`` in epoch seconds; ``mono`` starts at 0)."""

    wall: float
    mono: float = 0.0

    def time(self) -> float:
        return self.wall

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.wall, UTC)

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


SYSTEM_CLOCK: Clock = SystemClock()
"""The default for components built without a clock (stateless: safe to share)."""
