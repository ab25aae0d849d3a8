"""Measured served tokens/s, from the generated-tokens counter each runtime exports (pure).

An LLM backend in Triton counts the tokens it generates per model: Triton's vLLM backend exports
the counter ``vllm:generation_tokens_total{model="<triton model>",version="<n>"}`` on Triton's
metrics port (the test model exports the same family). The operator already dials every runtime
that hosts a replica; it scrapes that counter and turns successive readings into a rate, as
Prometheus' ``rate()`` does:

* :func:`token_counters` reads the counter per Triton model out of one scrape;
* :class:`TokenRateMeter` keeps each series' readings inside a window and gives its rate per
  second (a counter that went down — the runtime restarted, the model reloaded — counts as a
  reset, not as negative tokens; a series with no reading in the window has no rate);
* :func:`job_rates` sums a job's replicas (a Triton model shared by two jobs on one runtime is
  split evenly between them: the counter cannot tell them apart);
* :func:`should_publish` is the deadband that keeps the status from being rewritten for noise.

The measured figure counts every token a replica generated, whichever way the request came (the
gateway, a direct client of the job's Service, a batch dispatcher); it is ``None`` (not
measured), never the declared ``tokensPerSecond``, when no replica's runtime exports the counter.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field

from tokenfleet.serving.runtime import _SAMPLE_RE, _parse_labels

__all__ = [
    "GENERATED_TOKENS_METRIC",
    "TokenRateMeter",
    "job_rates",
    "should_publish",
    "token_counters",
]

#: the generated-tokens counter of Triton's vLLM backend (and of the test model)
GENERATED_TOKENS_METRIC = "vllm:generation_tokens_total"


def token_counters(text: str, metric: str = GENERATED_TOKENS_METRIC) -> dict[str, float]:
    """Triton model name -> the ``metric`` counter, summed over the model's versions, from one
    scrape's Prometheus text (raises ``ValueError`` on a malformed line, like ``parse_metrics``).

    Models without the counter are absent (not 0): the runtime does not measure them.
    """
    out: dict[str, float] = {}
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line.startswith(metric):
            continue
        match = _SAMPLE_RE.match(line)
        if match is None:
            raise ValueError(f"bad metrics line {line!r}")
        if match.group("name") != metric:
            continue
        model = _parse_labels(match.group("labels") or "", line).get("model")
        value = float(match.group("value"))
        if model is None or math.isnan(value):
            continue
        out[model] = out.get(model, 0.0) + value
    return out


@dataclass
class _Series:
    raw_last: float | None = None
    total: float = 0.0  # the counter with resets undone (monotone)
    samples: deque[tuple[float, float]] = field(default_factory=deque)  # (time, total)


class TokenRateMeter:
    """Per-series rates over a sliding window of counter readings.

    Times are seconds on any monotonic clock the caller injects (``observe(..., now)``).
    """

    def __init__(self, window_seconds: float) -> None:
        if not window_seconds > 0:
            raise ValueError(f"window_seconds: must be > 0, got {window_seconds!r}")
        self.window = float(window_seconds)
        self._series: dict[Hashable, _Series] = {}

    def observe(self, key: Hashable, count: float, now: float) -> None:
        """Record a reading of the counter ``key`` taken at ``now``."""
        if math.isnan(count) or count < 0:
            raise ValueError(f"counter {key!r}: reading must be a number >= 0, got {count!r}")
        s = self._series.setdefault(key, _Series())
        if s.raw_last is not None:
            s.total += count - s.raw_last if count >= s.raw_last else count  # < : a reset
        s.raw_last = count
        if s.samples and now <= s.samples[-1][0]:
            s.samples[-1] = (s.samples[-1][0], s.total)  # same instant: keep the newest value
        else:
            s.samples.append((now, s.total))
        self._trim(s, now)

    def _trim(self, s: _Series, now: float) -> None:
        while s.samples and s.samples[0][0] < now - self.window:
            s.samples.popleft()

    def rate(self, key: Hashable, now: float) -> float | None:
        """Tokens per second of ``key`` over the window ending ``now``; ``None`` with fewer than
        two readings in the window (not measured yet, or no longer reachable)."""
        s = self._series.get(key)
        if s is None:
            return None
        self._trim(s, now)
        if len(s.samples) < 2:
            return None
        (t0, v0), (t1, v1) = s.samples[0], s.samples[-1]
        return (v1 - v0) / (t1 - t0)

    def retain(self, keys: Iterable[Hashable]) -> None:
        """Forget every series not in ``keys`` (replicas that went away)."""
        keep = set(keys)
        for key in [k for k in self._series if k not in keep]:
            del self._series[key]

    def __len__(self) -> int:
        return len(self._series)


def job_rates(
    replicas: Mapping[str, Iterable[Hashable]], rate_of: Callable[[Hashable], float | None]
) -> dict[str, float | None]:
    """Job -> measured tokens/s: the sum over its replicas' series (``rate_of(series)``).

    A series listed by several jobs is split evenly among them. A job none of whose replicas has
    a rate gets ``None``; otherwise replicas without one (just loaded, unreachable) add nothing.
    """
    lists = {job: list(series) for job, series in replicas.items()}
    sharers: dict[Hashable, int] = {}
    for series in lists.values():
        for key in set(series):
            sharers[key] = sharers.get(key, 0) + 1
    out: dict[str, float | None] = {}
    for job, series in lists.items():
        known = [(r, sharers[k]) for k in set(series) if (r := rate_of(k)) is not None]
        out[job] = sum(r / n for r, n in known) if known else None
    return out


def should_publish(
    published: float | None,
    measured: float | None,
    *,
    relative: float = 0.1,
    absolute: float = 1.0,
) -> bool:
    """Whether ``measured`` differs enough from the ``published`` figure to rewrite the status:
    by more than ``relative`` of it and more than ``absolute`` tokens/s, or it became (or
    stopped being) measured, or it reached exactly 0 (the load stopped) or left 0."""
    if published is None or measured is None:
        return published is not measured
    if (published == 0) != (measured == 0):
        return True
    delta = abs(measured - published)
    return delta > absolute and delta > relative * abs(published)
