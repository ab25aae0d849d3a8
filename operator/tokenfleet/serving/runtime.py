"""Async client for the Triton runtimes on fleet nodes (``tritonclient.http.aio``).

One :class:`TritonRuntime` talks to one Triton server, addressed by its HTTP endpoint
``HOST:PORT`` (see :mod:`tokenfleet.serving.endpoints`). Every call has a timeout and maps
failures onto typed errors:

* :class:`~tokenfleet.serving.errors.RuntimeUnavailable` — connection refused/reset, call
  timeout, server-side 5xx not about a model;
* :class:`~tokenfleet.serving.errors.ModelLoadFailed` / ``ModelUnloadFailed`` — Triton's own
  message in ``.message``;
* :class:`~tokenfleet.serving.errors.InferenceFailed` — inference rejected;
* :class:`~tokenfleet.serving.errors.WaitTimeout` — ``wait_loaded`` / ``wait_unloaded`` gave up.

:class:`RuntimePool` caches one client per endpoint, bounds concurrency (a global and a
per-endpoint :class:`asyncio.Semaphore`) and closes the clients.

Conventions:

* The Triton model name of a variant is ``<model.name>-<variant.name>`` unless the variant
  sets ``tritonModelName`` (the operator decides; this module only takes names).
* The LLM-backend contract (as Triton's vLLM and TensorRT-LLM backends): a decoupled model on
  Triton's generate extension, input ``text_input`` (+ optional ``max_tokens``, ``temperature``,
  ``seed``, ``stream``), output ``text_output`` (+ ``completion_tokens``, ``prompt_tokens``,
  ``finish_reason``).
* Metrics: Triton's metrics port is its HTTP port + 2 (8000 -> 8002 in pods; the local fleet
  allocates its ports the same way), unless ``metrics_url`` is given explicitly.
  ``nv_cpu_memory_used_bytes`` is the host's used memory as Triton reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import aiohttp
from tritonclient.http.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from tokenfleet.serving.endpoints import parse_host_port
from tokenfleet.serving.errors import (
    EndpointError,
    InferenceFailed,
    ModelLoadFailed,
    ModelUnloadFailed,
    RuntimeUnavailable,
    WaitTimeout,
)
from tokenfleet.serving.http11 import UpstreamPool

__all__ = [
    "DEFAULT_LOAD_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "ConcurrencyStats",
    "Generation",
    "ModelMetrics",
    "ModelState",
    "ModelStatus",
    "RuntimeMetrics",
    "RuntimePool",
    "TritonRuntime",
    "default_metrics_url",
    "parse_metrics",
]

DEFAULT_TIMEOUT = 5.0
"""Seconds for one control/inference call (health, index, unload, infer, metrics)."""
DEFAULT_LOAD_TIMEOUT = 120.0
"""Seconds for one ``load`` call (Triton's load API returns when the model is loaded)."""
POLL_INTERVAL = 0.05
"""Seconds between polls in ``wait_loaded`` / ``wait_unloaded``."""


@dataclass(frozen=True, slots=True)
class Generation:
    """One finished generate call: the text and its token counts."""

    text: str
    completion_tokens: int
    prompt_tokens: int
    finish_reason: str

    @property
    def tokens(self) -> list[str]:
        """The generated text split into its tokens (words)."""
        return self.text.split()


class ModelState(enum.StrEnum):
    """State of one model on one runtime (Triton's repository-index states, plus ``ABSENT``)."""

    READY = "READY"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"  # known to Triton, not serving (unloaded, or the load failed)
    ABSENT = "ABSENT"  # not loaded and not reported by the runtime at all


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """A model's state and Triton's reason (e.g. ``unloaded`` or a load error)."""

    name: str
    state: ModelState
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ModelMetrics:
    """Per-model counters from Triton's metrics (summed over versions)."""

    request_success: float = 0.0
    request_failure: float = 0.0
    inference_count: float = 0.0
    exec_count: float = 0.0
    pending_requests: float = 0.0
    request_duration_us: float = 0.0


@dataclass(frozen=True, slots=True)
class RuntimeMetrics:
    """One scrape of a runtime's Prometheus metrics.

    ``samples`` maps ``name{label="v",...}`` (labels sorted) to the value for anything else.
    """

    cpu_memory_used_bytes: int | None = None
    cpu_memory_total_bytes: int | None = None
    cpu_utilization: float | None = None
    pinned_memory_used_bytes: int | None = None
    models: Mapping[str, ModelMetrics] = field(default_factory=dict)
    samples: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConcurrencyStats:
    """Calls in flight on one endpoint now, and the most ever seen at once."""

    in_flight: int
    high_water: int


def default_metrics_url(endpoint: str, offset: int = 2) -> str:
    """``http://HOST:(PORT+offset)/metrics`` for the HTTP endpoint ``HOST:PORT`` (Triton's
    defaults: 8000 -> 8002; the chart passes ``metricsPort - httpPort`` as the offset)."""
    host, port = parse_host_port(endpoint)
    host_part = f"[{host}]" if ":" in host else host
    if not 1 <= port + offset <= 65535:
        raise EndpointError(f"runtime endpoint {endpoint!r}: metrics port {port + offset} invalid")
    return f"http://{host_part}:{port + offset}/metrics"


_MODEL_FAMILIES = {
    "nv_inference_request_success": "request_success",
    "nv_inference_request_failure": "request_failure",
    "nv_inference_count": "inference_count",
    "nv_inference_exec_count": "exec_count",
    "nv_inference_pending_request_count": "pending_requests",
    "nv_inference_request_duration_us": "request_duration_us",
}


_SAMPLE_RE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r"(?:\{(?P<labels>.*)\})?"
    r"\s+(?P<value>\S+)(?:\s+-?[0-9]+)?\s*$"
)
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def _parse_labels(text: str, line: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = _LABEL_RE.match(text, pos)
        if match is None:
            raise ValueError(f"bad labels in metrics line {line!r}")
        raw = match.group(2)
        labels[match.group(1)] = (
            raw.replace("\\\\", "\x00")
            .replace('\\"', '"')
            .replace("\\n", "\n")
            .replace("\x00", "\\")
        )
        pos = match.end()
    return labels


def parse_metrics(text: str) -> RuntimeMetrics:
    """Parse Triton's Prometheus text exposition (pure; raises ``ValueError`` on a bad line).

    Sample names are kept as written (no ``_total`` renaming). ``nv_cpu_memory_*`` read 0 until
    Triton's first CPU-metrics poll (``--metrics-interval-ms``, 2 s by default): a total of 0
    is reported as ``None`` (not sampled yet).
    """
    samples: dict[str, float] = {}
    per_model: dict[str, dict[str, float]] = {}
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE_RE.match(line)
        if match is None:
            raise ValueError(f"bad metrics line {line!r}")
        name = match.group("name")
        labels = _parse_labels(match.group("labels") or "", line)
        value = float(match.group("value"))
        label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        samples[f"{name}{{{label_text}}}" if label_text else name] = value
        attr = _MODEL_FAMILIES.get(name)
        model = labels.get("model")
        if attr is not None and model is not None:
            bucket = per_model.setdefault(model, {})
            bucket[attr] = bucket.get(attr, 0.0) + value

    def _sum(name: str) -> float | None:
        found = [v for k, v in samples.items() if k == name or k.startswith(name + "{")]
        found = [v for v in found if not math.isnan(v)]
        return sum(found) if found else None

    mem_total = _sum("nv_cpu_memory_total_bytes")
    sampled = bool(mem_total)
    mem_used = _sum("nv_cpu_memory_used_bytes") if sampled else None
    pinned = _sum("nv_pinned_memory_pool_used_bytes")
    util = _sum("nv_cpu_utilization") if sampled else None
    return RuntimeMetrics(
        cpu_memory_used_bytes=None if mem_used is None else int(mem_used),
        cpu_memory_total_bytes=None if not mem_total else int(mem_total),
        cpu_utilization=util,
        pinned_memory_used_bytes=None if pinned is None else int(pinned),
        models={name: ModelMetrics(**vals) for name, vals in sorted(per_model.items())},
        samples=samples,
    )


def _index_rows(endpoint: str, status: int, body: bytes) -> list[Mapping[str, Any]]:
    """The rows of a ``POST /v2/repository/index`` answer; an error answer or a body that is not
    a list of objects raises ``RuntimeUnavailable`` with Triton's message (its ``error``)."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if status != 200:
        message = data.get("error") if isinstance(data, dict) else None
        text = str(message) if message else body[:200].decode("utf-8", "replace")
        raise RuntimeUnavailable(endpoint, f"repository index answered HTTP {status}: {text}")
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise RuntimeUnavailable(
            endpoint, f"unparsable repository index: {body[:200].decode('utf-8', 'replace')}"
        )
    return data


class _Gauge:
    """Calls in flight and the high-water mark."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.high_water = 0

    def enter(self) -> None:
        self.in_flight += 1
        self.high_water = max(self.high_water, self.in_flight)

    def exit(self) -> None:
        self.in_flight -= 1

    @property
    def stats(self) -> ConcurrencyStats:
        return ConcurrencyStats(self.in_flight, self.high_water)


class _Limits:
    """Acquires the semaphores in order (per-endpoint, then global); counts calls in flight."""

    def __init__(self, semaphores: Sequence[asyncio.Semaphore], gauges: Sequence[_Gauge]) -> None:
        self._semaphores = tuple(semaphores)
        self._gauges = tuple(gauges)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for sem in self._semaphores:
                await stack.enter_async_context(sem)
            for gauge in self._gauges:
                gauge.enter()
            try:
                yield
            finally:
                for gauge in self._gauges:
                    gauge.exit()


class TritonRuntime:
    """Client of one Triton server at ``endpoint`` (``HOST:PORT`` of its HTTP port).

    Create it inside a running event loop's context (or let :class:`RuntimePool` do it); the
    underlying HTTP session is opened lazily on the first call. ``close()`` it when done.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        load_timeout: float = DEFAULT_LOAD_TIMEOUT,
        metrics_url: str | None = None,
        limits: Sequence[asyncio.Semaphore] = (),
        gauges: Sequence[_Gauge] = (),
        monotonic: Callable[[], float] = time.monotonic,
        http: UpstreamPool | None = None,
    ) -> None:
        host, port = parse_host_port(endpoint)  # raises EndpointError on garbage
        #: the clock of the load/unload waits (injected: the operator's clock)
        self.monotonic = monotonic
        self.endpoint = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.timeout = timeout
        self.load_timeout = load_timeout
        self.metrics_url = metrics_url or default_metrics_url(self.endpoint)
        split = urlsplit(self.metrics_url)
        if split.scheme != "http" or not split.netloc or split.query:
            raise EndpointError(
                f"metrics URL {self.metrics_url!r}: expected http://HOST:PORT/PATH (no query)"
            )
        #: (HOST:PORT, path) the metrics are scraped from, on the lean client
        self._metrics_target = (split.netloc, split.path or "/")
        self._gauge = _Gauge()
        self._limits = _Limits(limits, (self._gauge, *gauges))
        self._client: InferenceServerClient | None = None
        self._session: aiohttp.ClientSession | None = None
        #: the lean keep-alive client of the readiness probe and the metrics scrape (shared by
        #: a RuntimePool's runtimes; a runtime made alone owns one)
        self._http = http
        self._owns_http = http is None
        self._closed = False

    # ---- plumbing -------------------------------------------------------------------

    @property
    def stats(self) -> ConcurrencyStats:
        """Calls in flight on this client now and the most seen at once."""
        return self._gauge.stats

    def _triton(self) -> InferenceServerClient:
        if self._closed:
            raise RuntimeUnavailable(self.endpoint, "client is closed")
        if self._client is None:
            # conn_timeout is aiohttp's total timeout; our asyncio.timeout is the real bound.
            self._client = InferenceServerClient(
                self.endpoint, conn_timeout=max(self.timeout, self.load_timeout)
            )
        return self._client

    @contextlib.asynccontextmanager
    async def _call(self, what: str, timeout: float | None = None) -> AsyncIterator[None]:  # noqa: ASYNC109
        """Bound by the concurrency limits and ``timeout``; map transport errors."""
        limit = self.timeout if timeout is None else timeout
        try:
            async with self._limits.slot(), asyncio.timeout(limit):
                yield
        except TimeoutError as exc:
            raise RuntimeUnavailable(self.endpoint, f"{what} timed out after {limit:.1f}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise RuntimeUnavailable(self.endpoint, f"{what}: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _triton_message(exc: InferenceServerException) -> str:
        return str(exc.message() or exc)

    @staticmethod
    def _triton_status(exc: InferenceServerException) -> int:
        try:
            return int(exc.status() or 0)
        except (TypeError, ValueError):
            return 0

    # ---- health ---------------------------------------------------------------------

    async def is_live(self) -> bool:
        """``GET /v2/health/live``. False (never an exception) when unreachable or timed out."""
        try:
            async with self._call("live"):
                return bool(await self._triton().is_server_live())
        except RuntimeUnavailable:
            return False

    async def is_ready(self) -> bool:
        """``GET /v2/health/ready``. False (never an exception) when unreachable or timed out.

        Triton's readiness is strict by default: it is False while any model is LOADING or
        UNLOADING (measured: ~1.3 s after each unload), so use :meth:`is_live` as the runtime's
        health signal and per-model state for replicas.
        """
        try:
            return await self.server_ready()
        except RuntimeUnavailable:
            return False

    async def server_ready(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """``GET /v2/health/ready`` as the server answers it (True on 200, False otherwise).

        Unlike :meth:`is_ready`, a server that does not answer (refused, reset, timed out after
        ``timeout``, default the client's) raises ``RuntimeUnavailable``, so a caller can tell
        "answered not ready" from "gone".
        """
        async with self._call("ready", timeout):
            # the probe every few seconds of every runtime hosting a replica: on the lean
            # HTTP/1.1 client, not tritonclient's aiohttp session (most of its CPU per probe)
            resp = await self._lean().get(self.endpoint, "/v2/health/ready")
            try:
                await resp.read()
            finally:
                resp.close()
            return resp.status == 200

    def _lean(self) -> UpstreamPool:
        """The lean keep-alive client (:mod:`tokenfleet.serving.http11`) of the calls every
        runtime gets every few seconds: the readiness probe, the metrics scrape and the
        repository index (the jobs' re-checks)."""
        if self._closed:
            raise RuntimeUnavailable(self.endpoint, "client is closed")
        if self._http is None:
            self._http = UpstreamPool(
                limit_per_endpoint=4,
                connect_timeout=self.timeout,
                request_timeout=self.timeout,
            )
        return self._http

    async def server_metadata(self) -> dict[str, Any]:
        """``GET /v2`` (name, version, extensions). Raises ``RuntimeUnavailable``."""
        async with self._call("metadata"):
            try:
                meta = await self._triton().get_server_metadata()
            except InferenceServerException as exc:
                raise RuntimeUnavailable(self.endpoint, self._triton_message(exc)) from exc
        return dict(meta)

    # ---- model control --------------------------------------------------------------

    async def load(self, model_name: str) -> None:
        """Load (or reload) ``model_name`` from the runtime's model repository.

        Returns when Triton reports it loaded (Triton's load API is synchronous), bounded by
        ``load_timeout``. Raises ``ModelLoadFailed`` with Triton's message (e.g. missing model,
        bad config, ``initialize`` raised) or ``RuntimeUnavailable``. Loading a model that is
        already READY is a cheap no-op on Triton's side.
        """
        async with self._call(f"load {model_name}", self.load_timeout):
            try:
                await self._triton().load_model(model_name)
            except InferenceServerException as exc:
                raise ModelLoadFailed(self.endpoint, model_name, self._triton_message(exc)) from exc

    async def unload(self, model_name: str) -> None:
        """Ask Triton to unload ``model_name``; returns at once (state shows UNLOADING ~1.3 s).

        Use :meth:`wait_unloaded` to wait for it to go. Unloading a model that is not loaded
        succeeds. Raises ``ModelUnloadFailed`` / ``RuntimeUnavailable``.
        """
        async with self._call(f"unload {model_name}"):
            try:
                await self._triton().unload_model(model_name)
            except InferenceServerException as exc:
                raise ModelUnloadFailed(
                    self.endpoint, model_name, self._triton_message(exc)
                ) from exc

    async def is_model_ready(self, model_name: str) -> bool:
        """``GET /v2/models/<name>/ready`` (reliable for API-loaded models too)."""
        async with self._call(f"ready {model_name}"):
            return bool(await self._triton().is_model_ready(model_name))

    async def repository_index(self) -> list[ModelStatus]:
        """Triton's repository index as :class:`ModelStatus` rows (sorted by name).

        Models never loaded appear as ``ABSENT`` (Triton lists them without a state).
        Models loaded purely through the API (config+files) may be missing here.
        """
        async with self._call("repository index"):
            # every job re-checks its replicas this way every resync: on the lean client too
            resp = await self._lean().post(self.endpoint, "/v2/repository/index", b"")
            try:
                body = await resp.read()
            finally:
                resp.close()
        index = _index_rows(self.endpoint, resp.status, body)
        rows: list[ModelStatus] = []
        for entry in index:
            raw_state = str(entry.get("state") or "")
            try:
                state = ModelState(raw_state) if raw_state else ModelState.ABSENT
            except ValueError:
                state = ModelState.UNAVAILABLE
            rows.append(
                ModelStatus(str(entry.get("name", "")), state, str(entry.get("reason", "")))
            )
        return sorted(rows, key=lambda s: s.name)

    async def model_status(self, model_name: str) -> ModelStatus:
        """State of ``model_name``: the repository index when it lists a state, else
        ``is_model_ready`` (READY or ABSENT). If several versions are listed, the most
        "alive" wins (READY > LOADING > UNLOADING > UNAVAILABLE)."""
        order = [ModelState.READY, ModelState.LOADING, ModelState.UNLOADING, ModelState.UNAVAILABLE]
        rows = [
            r for r in await self.repository_index() if r.name == model_name and r.state in order
        ]
        if rows:
            return min(rows, key=lambda r: order.index(r.state))
        ready = await self.is_model_ready(model_name)
        return ModelStatus(model_name, ModelState.READY if ready else ModelState.ABSENT)

    async def model_state(self, model_name: str) -> ModelState:
        """Shorthand for ``(await model_status(name)).state``."""
        return (await self.model_status(model_name)).state

    async def wait_loaded(self, model_name: str, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Poll until ``model_name`` is READY.

        Raises ``ModelLoadFailed`` when Triton reports the model UNAVAILABLE with a reason other
        than ``unloaded`` (a failed load), ``WaitTimeout`` after ``timeout`` seconds,
        ``RuntimeUnavailable`` if the runtime stops answering.
        """
        deadline = self.monotonic() + timeout
        last = ModelStatus(model_name, ModelState.ABSENT)
        while True:
            last = await self.model_status(model_name)
            if last.state is ModelState.READY:
                return
            if last.state is ModelState.UNAVAILABLE and last.reason not in ("", "unloaded"):
                raise ModelLoadFailed(self.endpoint, model_name, last.reason)
            if self.monotonic() >= deadline:
                raise WaitTimeout(self.endpoint, model_name, "loaded", last.state, timeout)
            await asyncio.sleep(POLL_INTERVAL)

    async def wait_unloaded(self, model_name: str, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Poll until ``model_name`` is neither READY, LOADING nor UNLOADING.

        Raises ``WaitTimeout`` after ``timeout`` seconds, ``RuntimeUnavailable`` if the runtime
        stops answering.
        """
        busy = (ModelState.READY, ModelState.LOADING, ModelState.UNLOADING)
        deadline = self.monotonic() + timeout
        while True:
            state = await self.model_state(model_name)
            if state not in busy:
                return
            if self.monotonic() >= deadline:
                raise WaitTimeout(self.endpoint, model_name, "unloaded", state, timeout)
            await asyncio.sleep(POLL_INTERVAL)

    # ---- inference ------------------------------------------------------------------

    async def generate(
        self,
        model_name: str,
        prompt: str,
        max_tokens: int,
        *,
        temperature: float = 0.0,
        seed: int = 0,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Generation:
        """One non-streaming request on Triton's generate extension.

        ``POST /v2/models/{model}/generate`` with ``text_input``, ``max_tokens``,
        ``temperature``, ``seed`` (the LLM-backend contract, see the module docstring).
        Raises ``InferenceFailed`` (Triton's message: unknown/unready model, bad input) or
        ``RuntimeUnavailable``.
        """
        if max_tokens < 0:
            raise ValueError("max_tokens must be >= 0")
        if self._closed:
            raise RuntimeUnavailable(self.endpoint, "client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        body = {
            "text_input": prompt,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": seed,
            "stream": False,
        }
        url = f"http://{self.endpoint}/v2/models/{model_name}/generate"
        async with (
            self._call(f"generate {model_name}", timeout),
            self._session.post(url, json=body) as resp,
        ):
            payload = await resp.json(content_type=None)
            if resp.status != 200 or "error" in payload:
                raise InferenceFailed(
                    self.endpoint, model_name, str(payload.get("error") or resp.status)
                )
        return Generation(
            text=str(payload.get("text_output") or ""),
            completion_tokens=int(payload.get("completion_tokens") or 0),
            prompt_tokens=int(payload.get("prompt_tokens") or 0),
            finish_reason=str(payload.get("finish_reason") or ""),
        )

    # ---- metrics --------------------------------------------------------------------

    async def metrics_text(self) -> str:
        """The raw Prometheus text from ``metrics_url``. Raises ``RuntimeUnavailable``."""
        if self._closed:
            raise RuntimeUnavailable(self.endpoint, "client is closed")
        async with self._call("metrics"):
            resp = await self._lean().get(*self._metrics_target)
            try:
                body = (await resp.read()).decode("utf-8", "replace")
            finally:
                resp.close()
        if resp.status != 200:
            raise RuntimeUnavailable(
                self.endpoint, f"metrics answered HTTP {resp.status}: {body[:200]}"
            )
        return body

    async def metrics(self) -> RuntimeMetrics:
        """Scrape and parse the runtime's metrics."""
        text = await self.metrics_text()
        try:
            return parse_metrics(text)
        except ValueError as exc:
            raise RuntimeUnavailable(self.endpoint, f"unparsable metrics: {exc}") from exc

    async def memory_bytes(self) -> int | None:
        """``nv_cpu_memory_used_bytes`` (host memory in use as Triton reports it), or ``None``
        until Triton's first CPU-metrics poll. Raises ``RuntimeUnavailable``."""
        return (await self.metrics()).cpu_memory_used_bytes

    # ---- lifecycle ------------------------------------------------------------------

    async def close(self) -> None:
        """Close the HTTP sessions; later calls raise ``RuntimeUnavailable``. Idempotent."""
        self._closed = True
        client, self._client = self._client, None
        session, self._session = self._session, None
        http, self._http = self._http, None
        if client is not None:
            await client.close()
        if session is not None:
            await session.close()
        if http is not None and self._owns_http:
            await http.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class RuntimePool:
    """One cached :class:`TritonRuntime` per endpoint, with bounded concurrency.

    Every call through a pooled client holds one slot of the endpoint's semaphore
    (``per_endpoint_concurrency``) and one of the pool-wide semaphore (``max_concurrency``),
    acquired in that order. Use as ``async with RuntimePool() as pool:`` or call ``close()``.
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        load_timeout: float = DEFAULT_LOAD_TIMEOUT,
        max_concurrency: int = 64,
        per_endpoint_concurrency: int = 4,
        metrics_offset: int = 2,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_concurrency < 1 or per_endpoint_concurrency < 1:
            raise ValueError("concurrency limits must be >= 1")
        #: a runtime's metrics port minus its HTTP port (default_metrics_url)
        self.metrics_offset = metrics_offset
        self.monotonic = monotonic
        self.timeout = timeout
        self.load_timeout = load_timeout
        self.max_concurrency = max_concurrency
        self.per_endpoint_concurrency = per_endpoint_concurrency
        self._global = asyncio.Semaphore(max_concurrency)
        self._global_gauge = _Gauge()
        self._runtimes: dict[str, TritonRuntime] = {}
        #: one lean keep-alive client for every runtime's readiness probe and metrics scrape
        self._http = UpstreamPool(connect_timeout=timeout, request_timeout=timeout)
        self._closed = False

    def get(self, endpoint: str, *, metrics_url: str | None = None) -> TritonRuntime:
        """The cached client for ``endpoint`` (created on first use; ``EndpointError`` on garbage).

        ``metrics_url`` applies only when the client is created (default: HTTP port +
        ``metrics_offset``).
        """
        if self._closed:
            raise RuntimeError("RuntimePool is closed")
        key = self._key(endpoint)
        runtime = self._runtimes.get(key)
        if runtime is None:
            runtime = TritonRuntime(
                key,
                timeout=self.timeout,
                load_timeout=self.load_timeout,
                metrics_url=metrics_url or default_metrics_url(key, self.metrics_offset),
                limits=(asyncio.Semaphore(self.per_endpoint_concurrency), self._global),
                gauges=(self._global_gauge,),
                monotonic=self.monotonic,
                http=self._http,
            )
            self._runtimes[key] = runtime
        return runtime

    @staticmethod
    def _key(endpoint: str) -> str:
        host, port = parse_host_port(endpoint)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def endpoints(self) -> list[str]:
        """Endpoints with a cached client (sorted)."""
        return sorted(self._runtimes)

    def stats(self, endpoint: str) -> ConcurrencyStats:
        """In-flight / high-water call counts of the endpoint's client (zeros if none)."""
        runtime = self._runtimes.get(self._key(endpoint))
        return runtime.stats if runtime is not None else ConcurrencyStats(0, 0)

    @property
    def global_stats(self) -> ConcurrencyStats:
        """In-flight / high-water call counts over all endpoints of the pool."""
        return self._global_gauge.stats

    async def discard(self, endpoint: str) -> None:
        """Close and forget the endpoint's client (runtime recycled, node gone)."""
        runtime = self._runtimes.pop(self._key(endpoint), None)
        if runtime is not None:
            await runtime.close()

    async def close(self) -> None:
        """Close every cached client. Idempotent."""
        self._closed = True
        runtimes = list(self._runtimes.values())
        self._runtimes.clear()
        await asyncio.gather(*(r.close() for r in runtimes), return_exceptions=True)
        await self._http.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
