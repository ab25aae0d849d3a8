"""A lean keep-alive HTTP/1.1 client to the runtimes (asyncio protocol, no per-request machinery).

Two kinds of request go to the runtimes this way: the gateway's small JSON ``POST`` to a
runtime's generate endpoint (a JSON answer or a stream of server-sent events), and the
operator's ``GET``s every runtime hosting a replica gets every few seconds: the readiness probe
(``/v2/health/ready``) and the metrics scrape. A general client (aiohttp's ``ClientSession``,
under tritonclient for the probe) spends most of the CPU per request on what these need none of
(URL objects, header multidicts, cookie and redirect handling, traces, payload wrappers); this
client writes a ready-made request in one ``write`` on a pooled connection and parses the
response in place (status line, ``Content-Length`` or chunked body, ``Connection: close``).

* **Pool**: keep-alive connections per runtime endpoint, the most recently used first; at most
  ``limit`` open in all and ``limit_per_endpoint`` to one endpoint (a request beyond waits for
  one, within the connect timeout); an idle one is closed after ``keepalive_seconds``, and at
  once when the runtime closes it.
* **Stale connections**: a runtime may close an idle keep-alive connection just as a request is
  written on it. A request on a reused connection that ends before any byte of the response
  arrived (EOF or reset) is sent once more on a fresh connection: the runtime did not answer
  it, and the caller has seen nothing.
* **Timeouts**: connecting (``connect_timeout``, also the wait for a pooled slot) and the whole
  response (``request_timeout``, from the request's start to its last byte): past it the
  connection is aborted and readers get :class:`TimeoutError`.

Errors are :class:`UpstreamError` (a :class:`ConnectionError`; not ``ConnectionResetError``,
which the server keeps for its own caller going away) or :class:`TimeoutError`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable
from typing import cast
from urllib.parse import quote

__all__ = ["UpstreamConnectError", "UpstreamError", "UpstreamPool", "UpstreamResponse"]

_MAX_HEAD = 64 * 1024
_MAX_CHUNK_LINE = 1024


class UpstreamError(ConnectionError):
    """The runtime's connection failed, closed early or spoke broken HTTP."""


class UpstreamConnectError(UpstreamError):
    """No connection to the runtime could be made (refused, unreachable, timed out, no slot)."""


class _Stale(UpstreamError):
    """A reused connection ended before the response's first byte (retried once, fresh)."""


class _Conn(asyncio.Protocol):
    """One connection: feeds an incremental HTTP/1.1 response parser."""

    __slots__ = (
        "_body",
        "_chunk_left",
        "_exc",
        "_head_done",
        "_left",
        "_mode",
        "_raw",
        "_timer",
        "_waiter",
        "closed",
        "counted_out",
        "done",
        "endpoint",
        "headers",
        "idle_since",
        "keep_alive",
        "loop",
        "on_done",
        "on_idle_lost",
        "received",
        "status",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, endpoint: str) -> None:
        self.loop = loop
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.counted_out = False  # the pool no longer counts it open
        #: set while the connection sits idle in the pool: called when the runtime closes it
        self.on_idle_lost: Callable[[_Conn], None] | None = None
        #: set while the rest of a response nobody reads is awaited (see ``linger``)
        self.on_done: Callable[[_Conn], None] | None = None
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self._raw = bytearray()  # received, not parsed yet
        self._body = bytearray()  # parsed body bytes, not consumed yet
        self._head_done = False
        self._mode = 0  # 0: Content-Length, 1: chunked, 2: until close
        self._left = 0  # Content-Length bytes still to come
        self._chunk_left = -1  # chunked: bytes of the current chunk left (-1: at a size line)
        self._exc: BaseException | None = None
        self.received = False  # any byte of this response arrived
        self.done = False  # the response is complete
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = True

    # ---- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self.done:  # bytes after a complete response: the connection is unusable
            self.keep_alive = False
            return
        self._raw += data
        try:
            self._parse()
        except UpstreamError as exc:
            self._fail(exc)
            return
        if self.on_done is not None:
            self._body.clear()  # nobody reads it
            if self.done:
                self._settle()
            return
        self._wake()

    def eof_received(self) -> bool | None:
        if not self.done and self._head_done and self._mode == 2:
            self._body += self._raw
            self._raw.clear()
            self.done = True
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.keep_alive = False
        self._cancel_timer()
        if self.on_idle_lost is not None:
            self.on_idle_lost(self)
        if self.on_done is not None:
            self._settle()
        if self.done:
            self._wake()
            return
        if exc is None:
            exc = EOFError("connection closed")
        kind = UpstreamError if self.received else _Stale
        error = kind(f"{self.endpoint}: {type(exc).__name__}: {exc}".rstrip(": "))
        error.__cause__ = exc
        self._fail(error)

    # ---- parsing ---------------------------------------------------------------------------------

    def _parse(self) -> None:
        raw = self._raw
        if not self._head_done:
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                if len(raw) > _MAX_HEAD:
                    raise UpstreamError(f"{self.endpoint}: response head over {_MAX_HEAD} bytes")
                return
            self._head(bytes(raw[:end]))
            del raw[: end + 4]
        if self._mode == 0:
            take = min(self._left, len(raw))
            if take:
                self._body += raw[:take]
                del raw[:take]
                self._left -= take
            if self._left == 0:
                self.done = True
                if raw:
                    self.keep_alive = False
        elif self._mode == 1:
            self._dechunk()
        else:
            self._body += raw
            raw.clear()

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise UpstreamError(f"{self.endpoint}: not an HTTP/1.x response: {lines[0]!r:.100}")
        self.status = int(parts[1])
        headers = self.headers
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise UpstreamError(f"{self.endpoint}: malformed header line {line!r:.100}")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        self._head_done = True
        connection = headers.get("connection", "").lower()
        if parts[0] == b"HTTP/1.0":
            self.keep_alive = "keep-alive" in connection
        elif "close" in connection:
            self.keep_alive = False
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._mode = 1
        elif "content-length" in headers:
            try:
                self._left = int(headers["content-length"])
            except ValueError:
                raise UpstreamError(f"{self.endpoint}: bad Content-Length") from None
            if self._left < 0:
                raise UpstreamError(f"{self.endpoint}: bad Content-Length")
        elif self.status in (204, 304) or 100 <= self.status < 200:
            self._left = 0
        else:
            self._mode = 2
            self.keep_alive = False

    def _dechunk(self) -> None:
        raw = self._raw
        while raw:
            if self._chunk_left < 0:  # at a chunk-size line
                end = raw.find(b"\r\n")
                if end < 0:
                    if len(raw) > _MAX_CHUNK_LINE:
                        raise UpstreamError(f"{self.endpoint}: chunk size line too long")
                    return
                size_text = bytes(raw[:end]).split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise UpstreamError(f"{self.endpoint}: bad chunk size {size_text!r}") from None
                if size == 0:  # the last chunk: trailers up to an empty line
                    trailer_end = raw.find(b"\r\n\r\n", end)  # == end: no trailers
                    if trailer_end < 0:
                        return
                    del raw[: trailer_end + 4]
                    self.done = True
                    if raw:
                        self.keep_alive = False
                    return
                del raw[: end + 2]
                self._chunk_left = size
            if self._chunk_left > 0:
                take = min(self._chunk_left, len(raw))
                self._body += raw[:take]
                del raw[:take]
                self._chunk_left -= take
                if self._chunk_left:
                    return
            if len(raw) < 2:  # the CRLF after a chunk's data
                return
            if raw[:2] != b"\r\n":
                raise UpstreamError(f"{self.endpoint}: chunk not followed by CRLF")
            del raw[:2]
            self._chunk_left = -1

    # ---- waiting ---------------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._exc is None:
            self._exc = exc
        self.keep_alive = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None and not self.closed:
            self.transport.abort()

    async def wait(self) -> None:
        """Until more of the response is parsed (or it failed: raises)."""
        if self._exc is not None:
            raise self._exc
        waiter = self._waiter = self.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(TimeoutError(f"{self.endpoint}: no complete response in time"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def start(self, request: bytes, deadline: float) -> None:
        """Send one request (the connection is idle and healthy)."""
        self._reset()
        self._timer = self.loop.call_at(deadline, self._timed_out)
        assert self.transport is not None
        self.transport.write(request)

    def linger(self, then: Callable[[_Conn], None], seconds: float) -> None:
        """Let the rest of the response (unread, discarded) arrive in the background, up to
        ``seconds``; then call ``then`` (at once when it is complete or the connection gone)."""
        self._body.clear()
        self.on_done = then
        if self.done or self.closed or self._exc is not None:
            self._settle()
            return
        self._cancel_timer()
        self._timer = self.loop.call_later(seconds, self._timed_out)

    def _settle(self) -> None:
        then, self.on_done = self.on_done, None
        if then is not None:
            then(self)

    def failure(self) -> BaseException | None:
        return self._exc

    def take_body(self) -> bytes:
        data = bytes(self._body)
        self._body.clear()
        return data

    def body_pending(self) -> int:
        return len(self._body)

    def reusable(self) -> bool:
        return self.done and self.keep_alive and not self.closed and not self._raw

    def finish(self) -> None:
        self._cancel_timer()

    def abort(self) -> None:
        self._cancel_timer()
        self.keep_alive = False
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True


class UpstreamResponse:
    """One response: ``status``, ``headers`` (lower-case names), the body read whole
    (:meth:`read`) or line by line (:meth:`readline`). :meth:`close` when done: the connection
    goes back to the pool when the whole response was read, else it is dropped."""

    __slots__ = ("_conn", "_lines", "_pool", "headers", "status")

    def __init__(self, pool: UpstreamPool, conn: _Conn) -> None:
        self._pool = pool
        self._conn: _Conn | None = conn
        self.status = conn.status
        self.headers = conn.headers
        self._lines = bytearray()

    def _live(self) -> _Conn:
        if self._conn is None:
            raise UpstreamError("response already closed")
        return self._conn

    async def read(self) -> bytes:
        """The whole (rest of the) body."""
        conn = self._live()
        parts = [bytes(self._lines)]
        self._lines.clear()
        while True:
            if conn.body_pending():
                parts.append(conn.take_body())
            if conn.done:
                break
            await conn.wait()
        self._release()
        return b"".join(parts)

    async def readline(self) -> bytes:
        """The next line with its ``\\n`` (the last one may lack it); ``b""`` at the end."""
        conn = self._live()
        buf = self._lines
        while True:
            end = buf.find(b"\n")
            if end >= 0:
                line = bytes(buf[: end + 1])
                del buf[: end + 1]
                return line
            if conn.body_pending():
                buf += conn.take_body()
                continue
            if conn.done:
                line = bytes(buf)
                buf.clear()
                if not line:
                    self._release()
                return line
            await conn.wait()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn)

    def close(self) -> None:
        """Done with the response (idempotent): an unread rest drops the connection."""
        self._release()

    def close_when_done(self, seconds: float = 1.0) -> None:
        """Done with a response whose rest is about to arrive (a stream's end after its last
        event): the connection goes back to the pool once it has, or is dropped after
        ``seconds``. Does not wait."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.linger(self._pool.release, seconds)


class UpstreamPool:
    """Keep-alive HTTP/1.1 connections to runtime endpoints (``HOST:PORT``); one event loop."""

    def __init__(
        self,
        *,
        limit: int = 4096,
        limit_per_endpoint: int = 1024,
        keepalive_seconds: float = 30.0,
        connect_timeout: float = 2.0,
        request_timeout: float = 300.0,
        on_stale_retry: Callable[[], object] | None = None,
    ) -> None:
        self.limit = limit
        self.limit_per_endpoint = limit_per_endpoint
        self.keepalive_seconds = keepalive_seconds
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self._idle: dict[str, list[_Conn]] = {}
        self._open: collections.Counter[str] = collections.Counter()
        self._open_total = 0
        self._waiters: dict[str, collections.deque[asyncio.Future[None]]] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._heads: dict[tuple[str, str, str], bytes] = {}
        self._closed = False
        #: requests sent again on a fresh connection after a stale keep-alive one (tests); each
        #: is also reported to ``on_stale_retry`` (the gateway's metric)
        self.stale_retries = 0
        self._on_stale_retry = on_stale_retry

    # ---- requests --------------------------------------------------------------------------------

    def _head(self, method: str, endpoint: str, path: str) -> bytes:
        key = (method, endpoint, path)
        head = self._heads.get(key)
        if head is None:
            if len(self._heads) > 4096:
                self._heads.clear()
            start = f"{method} {quote(path)} HTTP/1.1\r\nHost: {endpoint}\r\n"
            head = self._heads[key] = (
                start + "Content-Type: application/json\r\nContent-Length: "
                if method == "POST"
                else start + "\r\n"
            ).encode("latin-1")
        return head

    async def post(self, endpoint: str, path: str, body: bytes) -> UpstreamResponse:
        """Send ``POST path`` with a JSON ``body``; returns once the response's head arrived."""
        return await self._request(
            endpoint, self._head("POST", endpoint, path) + b"%d\r\n\r\n" % len(body) + body
        )

    async def get(self, endpoint: str, path: str) -> UpstreamResponse:
        """Send ``GET path``; returns once the response's head arrived."""
        return await self._request(endpoint, self._head("GET", endpoint, path))

    async def _request(self, endpoint: str, request: bytes) -> UpstreamResponse:
        if self._closed:
            raise UpstreamError("the upstream pool is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        fresh_only = False
        while True:
            conn, reused = await self._acquire(loop, endpoint, fresh_only)
            try:
                conn.start(request, deadline)
                while not conn._head_done:
                    await conn.wait()
            except _Stale:
                self._drop(conn)
                if reused and not fresh_only:
                    self.stale_retries += 1
                    if self._on_stale_retry is not None:
                        self._on_stale_retry()
                    fresh_only = True
                    continue
                raise
            except BaseException:
                self._drop(conn)
                raise
            return UpstreamResponse(self, conn)

    # ---- the pool --------------------------------------------------------------------------------

    async def _acquire(
        self, loop: asyncio.AbstractEventLoop, endpoint: str, fresh_only: bool
    ) -> tuple[_Conn, bool]:
        deadline = loop.time() + self.connect_timeout
        while True:
            idle = self._idle.get(endpoint)
            while idle and not fresh_only:
                conn = idle.pop()
                conn.on_idle_lost = None
                if not conn.closed and conn.transport is not None:
                    if time.monotonic() - conn.idle_since < self.keepalive_seconds:
                        return conn, True
                    conn.abort()
                self._forget(conn)
            if self._open[endpoint] < self.limit_per_endpoint and self._open_total < self.limit:
                return await self._connect(loop, endpoint, deadline), False
            if fresh_only and idle:  # make room: an idle connection of this endpoint goes
                conn = idle.pop(0)
                conn.abort()
                self._forget(conn)
                continue
            if not self._close_idle_elsewhere(endpoint):
                waiter = loop.create_future()
                self._waiters.setdefault(endpoint, collections.deque()).append(waiter)
                try:
                    async with asyncio.timeout_at(deadline):
                        await waiter
                except TimeoutError:
                    raise UpstreamConnectError(
                        f"{endpoint}: no connection free within {self.connect_timeout:g}s"
                    ) from None
                finally:
                    with contextlib.suppress(ValueError):
                        self._waiters[endpoint].remove(waiter)

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, endpoint: str, deadline: float
    ) -> _Conn:
        host, _, port_text = endpoint.rpartition(":")
        host = host.strip("[]")
        try:
            port = int(port_text)
        except ValueError:
            raise UpstreamConnectError(f"{endpoint}: not HOST:PORT") from None
        self._open[endpoint] += 1
        self._open_total += 1
        try:
            async with asyncio.timeout_at(deadline):
                _, conn = await loop.create_connection(lambda: _Conn(loop, endpoint), host, port)
        except BaseException as exc:
            self._open[endpoint] -= 1
            self._open_total -= 1
            self._wake_waiter(endpoint)
            if isinstance(exc, TimeoutError):
                raise UpstreamConnectError(f"{endpoint}: connect timed out") from exc
            if isinstance(exc, OSError):
                raise UpstreamConnectError(f"{endpoint}: {type(exc).__name__}: {exc}") from exc
            raise
        return conn

    def release(self, conn: _Conn) -> None:
        """A response is done with its connection: back to the pool if reusable, else closed."""
        conn.finish()
        if self._closed or not conn.reusable():
            self._drop(conn)
            return
        conn.idle_since = time.monotonic()
        conn.on_idle_lost = self._idle_lost
        self._idle.setdefault(conn.endpoint, []).append(conn)
        if self._sweep is None:
            loop = conn.loop
            self._sweep = loop.call_later(self.keepalive_seconds, self._sweep_idle)
        self._wake_waiter(conn.endpoint)

    def _idle_lost(self, conn: _Conn) -> None:
        """The runtime closed an idle connection: out of the pool now."""
        conn.on_idle_lost = None
        with contextlib.suppress(KeyError, ValueError):
            self._idle[conn.endpoint].remove(conn)
        self._forget(conn)

    def _drop(self, conn: _Conn) -> None:
        conn.abort()
        self._forget(conn)

    def _forget(self, conn: _Conn) -> None:
        """Count a closed connection out (once) and let a waiting request open another."""
        if conn.counted_out:
            return
        conn.counted_out = True
        self._open[conn.endpoint] -= 1
        if self._open[conn.endpoint] <= 0:
            del self._open[conn.endpoint]
        self._open_total -= 1
        self._wake_waiter(conn.endpoint)

    def _wake_waiter(self, endpoint: str) -> None:
        """Wake one request waiting for a slot: of this endpoint first, else of any."""
        for queue in (self._waiters.get(endpoint), *self._waiters.values()):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return

    def _close_idle_elsewhere(self, endpoint: str) -> bool:
        """At the total limit: close one idle connection of another endpoint (True if one)."""
        if self._open_total < self.limit:
            return False
        for other, conns in self._idle.items():
            if other != endpoint and conns:
                conn = conns.pop(0)
                conn.abort()
                self._forget(conn)
                return True
        return False

    def _sweep_idle(self) -> None:
        self._sweep = None
        now = time.monotonic()
        left = False
        for endpoint, conns in list(self._idle.items()):
            keep = []
            for conn in conns:
                if conn.closed or now - conn.idle_since >= self.keepalive_seconds:
                    conn.abort()
                    self._forget(conn)
                else:
                    keep.append(conn)
            if keep:
                self._idle[endpoint] = keep
                left = True
            else:
                del self._idle[endpoint]
        if left:
            self._sweep = asyncio.get_running_loop().call_later(
                self.keepalive_seconds / 2, self._sweep_idle
            )

    def idle_connections(self, endpoint: str | None = None) -> int:
        if endpoint is not None:
            return sum(1 for c in self._idle.get(endpoint, ()) if not c.closed)
        return sum(1 for conns in self._idle.values() for c in conns if not c.closed)

    def open_connections(self) -> int:
        return self._open_total

    async def close(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conns in self._idle.values():
            for conn in conns:
                conn.abort()
                self._forget(conn)
        self._idle.clear()
        await asyncio.sleep(0)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"UpstreamPool(open={self._open_total}, idle={self.idle_connections()})"
