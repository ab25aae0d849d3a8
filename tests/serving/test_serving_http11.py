"""The keep-alive HTTP/1.1 client to the runtimes (tokenfleet.serving.http11: the gateway's
generate calls, the operator's readiness probes and metrics scrapes), against real local aiohttp
servers on 127.0.0.1, on asyncio's loop and on uvloop."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvloop
from aiohttp import web

from tokenfleet.serving.http11 import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    _Conn,
)

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Awaitable[Any]], Any]:
    """Run a scenario coroutine on the loop of the parameter."""
    factory = LOOPS[request.param]

    def runner(coro: Awaitable[Any]) -> Any:
        async def main() -> Any:
            return await coro

        with asyncio.Runner(loop_factory=factory) as r:
            return r.run(main())

    return runner


class Runtime:
    """A real aiohttp server answering like Triton's generate endpoints; ``close_reused``:
    a request that is not the first on its connection finds the connection closed unanswered
    (the runtime closed an idle keep-alive connection just as the request was written)."""

    def __init__(self, *, close_reused: bool = False, close_all: bool = False) -> None:
        self.close_reused = close_reused
        self.close_all = close_all
        self.requests = 0
        self.seen: dict[int, object] = {}  # the connections' protocols, held: ids stay unique
        self.delay = 0.0
        self.bodies: list[Any] = []

    async def generate(self, request: web.Request) -> web.StreamResponse:
        conn = id(request.protocol)
        reused = conn in self.seen
        self.seen[conn] = request.protocol
        if self.close_all or (self.close_reused and reused):
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        self.requests += 1
        body = await request.json()
        self.bodies.append(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        model = request.match_info["model"]
        return web.json_response({"model_name": model, "text_output": "a b", "n": self.requests})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)  # chunked
        for i in range(3):
            await out.write(f"data: {json.dumps({'i': i})}\n\n".encode())
            await asyncio.sleep(0.01)
        await out.write_eof()
        return out

    async def missing(self, _: web.Request) -> web.Response:
        return web.json_response({"error": "Request for unknown model"}, status=404)

    async def ready(self, request: web.Request) -> web.Response:
        self.seen[id(request.protocol)] = request.protocol
        self.requests += 1
        self.bodies.append(await request.read())
        return web.Response(status=200 if self.requests % 2 else 400)


@asynccontextmanager
async def serving(rt: Runtime, keepalive: float = 75.0) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v2/models/{model}/generate", rt.generate)
    app.router.add_post("/v2/models/{model}/generate_stream", rt.stream)
    app.router.add_post("/v2/models/{model}/missing", rt.missing)
    app.router.add_get("/v2/health/ready", rt.ready)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=keepalive)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _post(pool: UpstreamPool, endpoint: str, path: str = "/v2/models/m/generate") -> Any:
    resp = await pool.post(endpoint, path, b'{"text_input":"x"}')
    assert resp.status == 200
    return json.loads(await resp.read())


def test_keep_alive_connections_are_reused(run: Callable[[Awaitable[Any]], Any]) -> None:
    async def scenario() -> None:
        rt = Runtime()
        async with serving(rt) as ep:
            pool = UpstreamPool()
            try:
                for i in range(5):
                    answer = await _post(pool, ep)
                    assert answer["n"] == i + 1
                assert pool.open_connections() == 1 and pool.idle_connections(ep) == 1
                assert len(rt.seen) == 1  # one connection served all five
                assert rt.bodies[0] == {"text_input": "x"}
                resp = await pool.post(ep, "/v2/models/m/missing", b"{}")
                assert resp.status == 404
                assert json.loads(await resp.read()) == {"error": "Request for unknown model"}
                assert pool.idle_connections(ep) == 1 and pool.stale_retries == 0
            finally:
                await pool.close()

    run(scenario())


def test_gets_without_a_body_share_one_connection(run: Callable[[Awaitable[Any]], Any]) -> None:
    async def scenario() -> None:
        rt = Runtime()
        async with serving(rt) as ep:
            pool = UpstreamPool()
            try:
                statuses = []
                for _ in range(4):
                    resp = await pool.get(ep, "/v2/health/ready")
                    assert await resp.read() == b""
                    resp.close()
                    statuses.append(resp.status)
                assert statuses == [200, 400, 200, 400]  # the runtime's answers, as given
                assert rt.bodies == [b""] * 4 and len(rt.seen) == 1
                assert pool.idle_connections(ep) == 1
            finally:
                await pool.close()

    run(scenario())


def test_stale_keep_alive_connection_is_retried_once_fresh(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    async def scenario() -> None:
        rt = Runtime(close_reused=True)
        reported: list[None] = []
        async with serving(rt) as ep:
            pool = UpstreamPool(on_stale_retry=lambda: reported.append(None))
            try:
                for _ in range(4):  # every request after the first lands on a stale connection
                    await _post(pool, ep)
                assert rt.requests == 4
                assert pool.stale_retries == 3 and len(reported) == 3
                assert pool.open_connections() == 1  # the stale ones were counted out
            finally:
                await pool.close()

    run(scenario())


def test_a_fresh_connection_closed_unanswered_is_an_error_not_a_loop(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    async def scenario() -> None:
        rt = Runtime(close_all=True)
        async with serving(rt) as ep:
            pool = UpstreamPool()
            try:
                with pytest.raises(UpstreamError) as info:
                    await _post(pool, ep)
                assert not isinstance(info.value, ConnectionResetError)
                assert pool.stale_retries == 0 and pool.open_connections() == 0
                rt.close_all = False
                await _post(pool, ep)  # a stale pooled one now: retried once, fresh
                rt.close_all = True
                with pytest.raises(UpstreamError):
                    await _post(pool, ep)
                assert pool.stale_retries == 1
            finally:
                await pool.close()

    run(scenario())


def test_idle_connection_closed_by_the_runtime_leaves_the_pool(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    async def scenario() -> None:
        rt = Runtime()
        async with serving(rt, keepalive=0.05) as ep:
            pool = UpstreamPool()
            try:
                await _post(pool, ep)
                for _ in range(100):
                    if pool.idle_connections(ep) == 0:
                        break
                    await asyncio.sleep(0.01)
                assert pool.idle_connections(ep) == 0 and pool.open_connections() == 0
                await _post(pool, ep)
                assert pool.stale_retries == 0 and len(rt.seen) == 2
            finally:
                await pool.close()

    run(scenario())


def test_streamed_events_read_line_by_line(run: Callable[[Awaitable[Any]], Any]) -> None:
    async def scenario() -> None:
        async with serving(Runtime()) as ep:
            pool = UpstreamPool()
            try:
                for _ in range(2):
                    resp = await pool.post(ep, "/v2/models/m/generate_stream", b"{}")
                    assert resp.headers["transfer-encoding"] == "chunked"
                    lines = []
                    while line := await resp.readline():
                        lines.append(line)
                    assert [json.loads(x[5:]) for x in lines if x.startswith(b"data:")] == [
                        {"i": 0},
                        {"i": 1},
                        {"i": 2},
                    ]
                    resp.close()
                assert pool.open_connections() == 1  # read to its end: reused
            finally:
                await pool.close()

    run(scenario())


def test_a_stream_left_after_its_last_event_keeps_its_connection(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    async def scenario() -> None:
        async with serving(Runtime()) as ep:
            pool = UpstreamPool()
            try:
                resp = await pool.post(ep, "/v2/models/m/generate_stream", b"{}")
                assert (await resp.readline()).startswith(b"data:")
                resp.close_when_done()  # the rest arrives in the background, unread
                for _ in range(200):
                    if pool.idle_connections(ep) == 1:
                        break
                    await asyncio.sleep(0.01)
                assert pool.idle_connections(ep) == 1 and pool.open_connections() == 1
                resp = await pool.post(ep, "/v2/models/m/generate_stream", b"{}")
                assert (await resp.readline()).startswith(b"data:")
                resp.close()  # abandoned mid-stream: the connection is dropped
                assert pool.open_connections() == 0
            finally:
                await pool.close()

    run(scenario())


def test_refused_timeouts_and_limits(run: Callable[[Awaitable[Any]], Any]) -> None:
    async def scenario() -> None:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            dead = f"127.0.0.1:{s.getsockname()[1]}"
        rt = Runtime()
        async with serving(rt) as ep:
            pool = UpstreamPool(limit_per_endpoint=1, connect_timeout=2.0, request_timeout=0.5)
            narrow = UpstreamPool(limit_per_endpoint=1, connect_timeout=0.2, request_timeout=10)
            try:
                with pytest.raises(UpstreamConnectError):
                    await _post(pool, dead)
                assert pool.open_connections() == 0
                rt.delay = 1.2
                with pytest.raises(TimeoutError):
                    await _post(pool, ep)
                assert pool.open_connections() == 0  # a timed-out connection is dropped
                rt.delay = 0.1
                first = asyncio.ensure_future(_post(pool, ep))
                await asyncio.sleep(0.02)
                second = asyncio.ensure_future(_post(pool, ep))  # waits for the one slot
                await first
                await second
                assert pool.open_connections() == 1
                rt.delay = 1.0  # the slot stays taken longer than a request may wait for it
                slow = asyncio.ensure_future(_post(narrow, ep))
                await asyncio.sleep(0.05)
                with pytest.raises(UpstreamConnectError):
                    await _post(narrow, ep)
                await slow
            finally:
                await pool.close()
                await narrow.close()

    run(scenario())


@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_responses_split_anywhere_parse_the_same(piece: int) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        body = b'{"text_output":"hello"}'
        chunked = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"a;ext=1\r\n" + body[:10] + b"\r\n" + b"%x\r\n" % len(body[10:]) + body[10:] + b"\r\n"
            b"0\r\nX-Trailer: y\r\n\r\n"
        )
        sized = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        closing = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        for raw, keep in ((chunked, True), (sized, True), (closing, False)):
            conn = _Conn(loop, "test:1")
            for i in range(0, len(raw), piece):
                assert not conn.done
                conn.data_received(raw[i : i + piece])
            assert conn.done and conn.status == 200 and conn.keep_alive is keep
            assert conn.take_body() == body
        broken = _Conn(loop, "test:1")
        broken.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        assert isinstance(broken.failure(), UpstreamError) and not broken.keep_alive

    asyncio.run(scenario())
