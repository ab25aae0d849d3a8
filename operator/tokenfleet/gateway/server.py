"""The OpenAI-compatible HTTP gateway (aiohttp): auth, rate limits, routing, retries, streaming.

Stateless: everything it routes by comes from Kubernetes (see :mod:`tokenfleet.gateway.table`
and :mod:`tokenfleet.gateway.keys`), so any number of replicas can run side by side.

Per request: the ``Authorization: Bearer <key>`` must match a labelled Secret (401), the key's
rate limit must admit it (429, with ``Retry-After``), the body must parse (400, naming the
field), ``model`` must name an InferenceJob in the key's namespace (``name`` or
``namespace/name``: 404 for none, 403 for another namespace's), and the job must have a ready
replica (503). The request goes to the replica with the least outstanding work per token/s on
Triton's generate extension (``generate`` or ``generate_stream``). If it fails before its
first byte (connection refused or reset, or Triton answering that the model is gone — the
replica was unloaded between the pick and the call) it is retried once on another replica; no
byte has reached the caller by then, so the retry is invisible. (Before that, a request written on
a kept-alive connection the runtime had just closed goes once more to the same replica on a fresh
connection: see :mod:`tokenfleet.serving.http11`, tokenfleet's own HTTP/1.1 client.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tokenfleet.gateway import api
from tokenfleet.gateway.api import ApiError, GenerateRequest
from tokenfleet.gateway.keys import ApiKey, KeyStore
from tokenfleet.gateway.metrics import GatewayMetrics, JobMetrics
from tokenfleet.gateway.table import JobInfo, Replica, RoutingTable
from tokenfleet.serving.http11 import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
)

__all__ = ["Gateway", "GatewaySettings"]

_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}

#: Triton's answers that mean "this replica does not serve the model (any more)": retryable
_GONE_MARKERS = ("unknown model", "not found", "no available versions", "not ready", "unavailable")


@dataclass(frozen=True)
class GatewaySettings:
    """Tunables of one gateway process."""

    connect_timeout_seconds: float = 2.0
    first_byte_timeout_seconds: float = 30.0
    request_timeout_seconds: float = 300.0
    max_attempts: int = 2
    #: the pooled keep-alive connections to the runtimes: at most this many open in all and to
    #: one runtime (a request beyond waits for one, within ``connect_timeout_seconds``), and an
    #: idle one is closed after ``upstream_keepalive_seconds``
    upstream_connections: int = 4096
    upstream_connections_per_runtime: int = 1024
    upstream_keepalive_seconds: float = 30.0
    #: a request for a job with no ready replica waits this long for one (a single replica
    #: being replaced, a job scaling up from zero) before it gets 503 (seconds)
    replica_wait_seconds: float = 5.0
    max_body_bytes: int = 1 << 20


class _Retryable(Exception):
    """The upstream failed before its first byte; another replica may serve the request."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass
class Gateway:
    """The gateway application: build with :meth:`app`, feed ``table``/``keys`` from watches."""

    table: RoutingTable
    keys: KeyStore
    settings: GatewaySettings = field(default_factory=GatewaySettings)
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    clock: Callable[[], float] = time.monotonic
    synced: Callable[[], bool] = lambda: True
    _pool: UpstreamPool | None = None

    # ---- wiring ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{model:.+}", self.model)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_handler)
        app.on_cleanup.append(self._close)
        return app

    def upstream(self) -> UpstreamPool:
        """The one pool of keep-alive connections to the runtimes (see
        :mod:`tokenfleet.serving.http11`: a lean HTTP/1.1 client, TCP_NODELAY as asyncio
        sets on every TCP connection, a stale keep-alive connection retried fresh once)."""
        if self._pool is None:
            s = self.settings
            self._pool = UpstreamPool(
                limit=s.upstream_connections,
                limit_per_endpoint=s.upstream_connections_per_runtime,
                keepalive_seconds=s.upstream_keepalive_seconds,
                connect_timeout=s.connect_timeout_seconds,
                request_timeout=s.request_timeout_seconds,
                on_stale_retry=self.metrics.upstream_stale_resends.inc,
            )
        return self._pool

    async def _close(self, _: web.Application) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # ---- small handlers --------------------------------------------------------------------------

    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(self, _: web.Request) -> web.Response:
        ready = self.synced()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def metrics_handler(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    @staticmethod
    def _error(exc: ApiError) -> web.Response:
        headers = {}
        if exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, int(exc.retry_after + 0.999)))
        return web.json_response(exc.body(), status=exc.status, headers=headers)

    def _authenticate(self, request: web.Request) -> ApiKey:
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(
                401,
                "missing API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )
        found = self.keys.lookup(key.strip())
        if found is None:
            raise ApiError(401, "incorrect API key provided", code="invalid_api_key")
        return found

    def _resolve(self, api_key: ApiKey, model: str) -> JobInfo:
        namespace, name = api.split_model(model)
        if namespace is not None and namespace != api_key.namespace:
            raise ApiError(
                403,
                f"model {model!r}: this key grants namespace {api_key.namespace!r} only",
                type_="invalid_request_error",
                param="model",
                code="permission_denied",
            )
        job = self.table.job(api_key.namespace, name)
        if job is None:
            raise ApiError(
                404,
                f"the model {model!r} does not exist or you do not have access to it",
                param="model",
                code="model_not_found",
            )
        return job

    def _model_entry(self, job: JobInfo) -> dict[str, Any]:
        return {
            "id": job.name,
            "object": "model",
            "created": job.created,
            "owned_by": job.namespace,
        }

    async def models(self, request: web.Request) -> web.Response:
        try:
            api_key = self._authenticate(request)
        except ApiError as exc:
            return self._error(exc)
        data = [self._model_entry(j) for j in self.table.jobs_in(api_key.namespace)]
        return web.json_response({"object": "list", "data": data})

    async def model(self, request: web.Request) -> web.Response:
        try:
            api_key = self._authenticate(request)
            job = self._resolve(api_key, request.match_info["model"])
        except ApiError as exc:
            return self._error(exc)
        return web.json_response(self._model_entry(job))

    # ---- generation ------------------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, api.parse_chat)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, api.parse_completion)

    async def _generate(
        self, request: web.Request, parse: Callable[[Any], GenerateRequest]
    ) -> web.StreamResponse:
        start = self.clock()
        try:
            api_key = self._authenticate(request)
            wait = self.keys.admit(api_key)
            if wait > 0:
                raise ApiError(
                    429,
                    f"rate limit of {api_key.requests_per_second:g} requests/s reached for"
                    f" this key; retry after {wait:.2f}s",
                    type_="requests",
                    code="rate_limit_exceeded",
                    retry_after=wait,
                )
            try:
                body = json.loads(await request.read())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ApiError(400, f"body is not JSON: {exc}", code="invalid_json") from exc
            req = parse(body)
            job = self._resolve(api_key, req.model)
        except ApiError as exc:
            self.metrics.refused(exc.status).inc()
            return self._error(exc)
        except BaseException:
            self.metrics.refused(500).inc()
            raise
        jm = self.metrics.job(job.namespace, job.name)
        code = 500
        jm.in_flight.inc()
        try:
            response, code = await self._serve(request, job, jm, req, start)
            return response
        except asyncio.CancelledError:
            code = 499  # the caller went away
            raise
        finally:
            jm.in_flight.dec()
            jm.requests(code).inc()
            jm.latency.observe(self.clock() - start)

    async def _open(
        self, job: JobInfo, req: GenerateRequest
    ) -> tuple[Replica, UpstreamResponse, dict[str, Any]]:
        """Pick a replica and get the upstream's first answer (the whole one when not
        streaming, the first event when streaming); retried once on another replica."""
        excluded: list[tuple[str, str]] = []
        last: _Retryable | None = None
        for attempt in range(self.settings.max_attempts):
            replica = self.table.pick(job, req.max_tokens, excluded)
            if replica is None and attempt == 0:
                replica = await self._wait_for_replica(job, req)
            if replica is None:
                break
            if attempt:
                assert last is not None
                self.metrics.retries.labels(job.namespace, job.name, last.reason).inc()
            self.table.begin(replica, req.max_tokens)
            try:
                resp, first = await self._upstream(replica, req)
            except _Retryable as exc:
                self.table.end(replica, req.max_tokens)
                excluded.append(replica.key)
                last = exc
                continue
            except BaseException:
                self.table.end(replica, req.max_tokens)
                raise
            return replica, resp, first
        if last is not None:
            raise ApiError(
                503,
                f"model {job.name!r}: no replica answered ({last})",
                type_="server_error",
                code="upstream_unavailable",
                retry_after=1,
            )
        raise ApiError(
            503,
            f"model {job.name!r} has no ready replica right now",
            type_="server_error",
            code="no_ready_replica",
            retry_after=1,
        )

    async def _wait_for_replica(self, job: JobInfo, req: GenerateRequest) -> Replica | None:
        deadline = self.clock() + self.settings.replica_wait_seconds
        while self.clock() < deadline:
            await asyncio.sleep(0.05)
            current = self.table.job(job.namespace, job.name) or job
            replica = self.table.pick(current, req.max_tokens)
            if replica is not None:
                return replica
        return None

    async def _upstream(
        self, replica: Replica, req: GenerateRequest
    ) -> tuple[UpstreamResponse, dict[str, Any]]:
        path = "generate_stream" if req.stream else "generate"
        payload = json.dumps(
            {
                "text_input": req.prompt,
                "max_tokens": req.max_tokens,
                "temperature": req.temperature,
                "seed": req.seed,
                "stream": req.stream,
            },
            separators=(",", ":"),
        ).encode()
        pool = self.upstream()
        resp: UpstreamResponse | None = None
        try:
            async with asyncio.timeout(self.settings.first_byte_timeout_seconds):
                resp = await pool.post(
                    replica.endpoint, f"/v2/models/{replica.model}/{path}", payload
                )
                if resp.status != 200:
                    text = (await resp.read()).decode("utf-8", "replace")
                    message = _error_text(text) or f"HTTP {resp.status}"
                    if resp.status >= 500 or any(m in message.lower() for m in _GONE_MARKERS):
                        raise _Retryable("model_gone", f"{replica.endpoint}: {message}")
                    raise ApiError(400, f"rejected by the runtime: {message}", code="invalid_value")
                if req.stream:
                    first = await _next_event(resp)
                    if first is None:
                        raise _Retryable("empty_stream", f"{replica.endpoint}: stream ended")
                else:
                    first = json.loads(await resp.read())
        except (UpstreamError, OSError, TimeoutError) as exc:
            if resp is not None:
                resp.close()
            reason = "connect" if isinstance(exc, UpstreamConnectError) else "reset"
            raise _Retryable(reason, f"{replica.endpoint}: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            if resp is not None:
                resp.close()
            raise
        assert resp is not None
        if "error" in first:
            resp.close()
            message = str(first["error"])
            if any(m in message.lower() for m in _GONE_MARKERS):
                raise _Retryable("model_gone", f"{replica.endpoint}: {message}")
            raise ApiError(400, f"rejected by the runtime: {message}", code="invalid_value")
        return resp, first

    async def _serve(
        self,
        request: web.Request,
        job: JobInfo,
        jm: JobMetrics,
        req: GenerateRequest,
        start: float,
    ) -> tuple[web.StreamResponse, int]:
        try:
            replica, resp, first = await self._open(job, req)
        except ApiError as exc:
            return self._error(exc), exc.status
        rid = api.new_id(req.kind)
        delivered = 0
        try:
            if not req.stream:
                text = str(first.get("text_output") or "")
                completion = int(first.get("completion_tokens") or 0)
                prompt_tokens = int(first.get("prompt_tokens") or 0)
                finish = str(first.get("finish_reason") or "length")
                build = api.chat_response if req.kind == "chat" else api.completion_response
                body = build(rid, req.model, text, finish, prompt_tokens, completion)
                delivered = completion
                self.table.progress(replica, completion)
                jm.ttft.observe(self.clock() - start)
                encoded = json.dumps(body, separators=(",", ":")).encode()
                return web.Response(body=encoded, content_type="application/json"), 200
            out = web.StreamResponse(status=200, headers=_SSE_HEADERS)
            await out.prepare(request)
            try:
                delivered = await self._relay(out, resp, first, req, rid, replica, jm, start)
            except ConnectionResetError:
                return out, 499
            except (OSError, TimeoutError, ValueError) as exc:
                error = ApiError(502, f"replica failed mid-stream: {exc}", type_="server_error")
                with contextlib.suppress(ConnectionResetError):
                    await out.write(api.sse(error.body()))
                return out, 502
            return out, 200
        finally:
            resp.close()
            self.table.end(replica, max(req.max_tokens - delivered, 0))
            if delivered:
                jm.tokens_out(replica.target).inc(delivered)

    async def _relay(
        self,
        out: web.StreamResponse,
        resp: UpstreamResponse,
        first: dict[str, Any],
        req: GenerateRequest,
        rid: str,
        replica: Replica,
        jm: JobMetrics,
        start: float,
    ) -> int:
        """Relay Triton's events as OpenAI chunks; returns the tokens delivered."""
        encoder = api.ChunkEncoder(req.kind, rid, req.model)
        event: dict[str, Any] | None = first
        sent = 0
        counts = (0, 0)
        finish: str | None = None
        accounted = 0
        while event is not None:
            if "error" in event:
                raise ValueError(str(event["error"]))
            text = str(event.get("text_output") or "")
            finish = str(event.get("finish_reason") or "") or None
            counts = (
                int(event.get("prompt_tokens") or 0),
                int(event.get("completion_tokens") or 0),
            )
            if text or finish or sent == 0:
                await out.write(encoder.chunk(text, finish, first=sent == 0))
                if sent == 0:
                    jm.ttft.observe(self.clock() - start)
                sent += 1
            if counts[1] > accounted:
                self.table.progress(replica, counts[1] - accounted)
                accounted = counts[1]
            if finish:
                break
            event = await _next_event(resp)
        if not finish:
            raise ValueError("the replica's stream ended without a finish reason")
        resp.close_when_done()  # the stream's end is on its way: keep the connection
        if req.include_usage:
            await out.write(encoder.usage(*counts))
        await out.write(b"data: [DONE]\n\n")
        await out.write_eof()
        return counts[1]


def _error_text(text: str) -> str:
    try:
        parsed = json.loads(text)
    except ValueError:
        return text.strip()[:500]
    if isinstance(parsed, dict) and "error" in parsed:
        return str(parsed["error"])
    return text.strip()[:500]


async def _next_event(resp: UpstreamResponse) -> dict[str, Any] | None:
    """The next ``data:`` event of a Triton SSE stream (``None`` at its end)."""
    while True:
        line = await resp.readline()
        if not line:
            return None
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if not data:
            continue
        parsed = json.loads(data)
        if isinstance(parsed, dict):
            return parsed
