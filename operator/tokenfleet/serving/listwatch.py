"""List-then-watch, the one mechanism behind every watch of tokenfleet's processes.

:func:`list_then_watch` runs in a thread: it lists, then watches from the list's
resourceVersion; a watch that times out is resumed from the last resourceVersion it delivered
(bookmarks included), as informers do; one that is told its version is gone (an ERROR event, 410)
raises :class:`Relist` and is followed by a fresh list at once; one that fails otherwise is
followed by a fresh list after a short pause. A full LIST happens only at start, after an error or
when the version is too old. :func:`watch_once` is one watch request; the callers bring their own
list (the operator's node watch pages it and parses as it goes) and their own sink.

Its users: :class:`ListWatch` here (the gateway's and the dispatcher's kinds, handed to the event
loop with ``call_soon_threadsafe``, so what the callbacks feed is only touched from the loop),
:class:`tokenfleet.delivery.mirror.Mirror` (the model cache's copies under a lock) and
:class:`tokenfleet.controllers.nodewatch.NodeWatch` (the operator's Nodes).

The calls are the official client's ``list_*`` functions with ``_preload_content=False``: the
events are read as raw JSON lines (no model decoding; ``orjson``: about half the CPU of the
standard library's decoder on a Node). This module imports no Kubernetes client
itself; the callers pass the bound list functions.

A watch of a busy kind can *gather* (``gather`` seconds): after an event it had to wait for, the
thread waits that long before it reads on, and then reads what arrived meanwhile back to back, so
events that arrive close together cost one wake-up of the thread, not one each. On these machines
a thread woken for each event spends several times the event's decoding on the wake-up itself
(5,000 kwok Nodes' status heartbeats: about 450 µs of CPU per event read one by one, about
220 µs gathered over 0.2 s, side by side, both with the standard library's JSON decoder). An
event that arrives after a quiet spell is handed on at once; one that follows it within
``gather`` seconds waits at most that long.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "ERROR_PAUSE_SECONDS",
    "WATCH_SECONDS",
    "ListWatch",
    "Relist",
    "Stopped",
    "WatchedKind",
    "list_then_watch",
    "post_to",
    "watch_events",
    "watch_once",
]

log = logging.getLogger(__name__)

WATCH_SECONDS = 60
"""Server-side timeout of one watch request; the watch is then resumed, not listed again."""
ERROR_PAUSE_SECONDS = 1.0


class Relist(Exception):
    """The watch lost its place (410 Gone, an ERROR event): list again."""


class Stopped(Exception):
    """What the watch feeds is gone (its event loop closed): the loop ends quietly."""


def post_to(loop: asyncio.AbstractEventLoop | None, fn: Callable[..., None], *args: Any) -> None:
    """Hand ``fn(*args)`` from a watch thread to ``loop`` (``call_soon_threadsafe``); raises
    :class:`Stopped` when the loop is gone (the process is ending: nothing is left to feed)."""
    if loop is None or loop.is_closed():
        raise Stopped
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        if loop.is_closed():  # closed between the check and the call
            raise Stopped from None
        raise


WAITED_SECONDS = 0.001
"""A read of the stream that took at least this long waited for its event to arrive (a read of
bytes already received returns in microseconds)."""


def watch_events(
    resp: Any, gather: float = 0.0, stop: threading.Event | None = None
) -> Iterator[dict[str, Any]]:
    """The JSON events of a watch response, one per line (raw dicts: no model decoding).

    ``gather`` > 0: after an event the reader had to wait for (the stream had been read to the
    end; its read took :data:`WAITED_SECONDS` or more), wait ``gather`` seconds (on ``stop``, so
    a stop ends the wait) before reading on; what arrived meanwhile is then read back to back,
    without a pause (module docstring).
    """
    pause = stop.wait if stop is not None else threading.Event().wait
    chunks = iter(resp.stream(65536, decode_content=False))
    buffer = b""
    while True:
        asked = time.monotonic()
        chunk = next(chunks, None)
        if chunk is None:
            return
        waited = time.monotonic() - asked >= WAITED_SECONDS
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = buffer[start:end]
            start = end + 1
            if line.strip():
                event = orjson.loads(line)
                if isinstance(event, dict):
                    yield event
        buffer = buffer[start:]
        if gather > 0 and waited:
            pause(gather)


def watch_once(
    list_call: Callable[..., Any],
    kwargs: Mapping[str, Any],
    version: str,
    on_event: Callable[[str, dict[str, Any]], None],
    stop: threading.Event,
    watch_seconds: int | None = None,
    gather: float = 0.0,
) -> str:
    """One watch from ``version``: ``on_event(type, object)`` for each ADDED, MODIFIED and
    DELETED; returns the version to resume from (the last one seen, bookmarks included); raises
    :class:`Relist` on an ERROR event (410 Gone: the version is too old). ``watch_seconds``:
    the server-side timeout (default :data:`WATCH_SECONDS`); ``gather``: see
    :func:`watch_events`."""
    if watch_seconds is None:
        watch_seconds = WATCH_SECONDS
    resp = list_call(
        **kwargs,
        watch=True,
        resource_version=version,
        allow_watch_bookmarks=True,
        timeout_seconds=watch_seconds,
        _preload_content=False,
        _request_timeout=(10, watch_seconds + 30),
    )
    try:
        for event in watch_events(resp, gather, stop):
            if stop.is_set():
                break
            type_ = event.get("type")
            obj = event.get("object")
            if type_ == "ERROR" or not isinstance(obj, dict):
                raise Relist(str(obj)[:300])
            seen = (obj.get("metadata") or {}).get("resourceVersion")
            if seen:
                version = str(seen)
            if type_ in ("ADDED", "MODIFIED", "DELETED"):
                on_event(str(type_), obj)
    finally:
        resp.release_conn()
    return version


def list_then_watch(
    name: str,
    list_once: Callable[[], str],
    watch: Callable[[str], str],
    stop: threading.Event,
    logger: logging.Logger = log,
    error_pause: float = ERROR_PAUSE_SECONDS,
) -> None:
    """Until ``stop`` is set (or the sink raises :class:`Stopped`): ``list_once()`` (returns the
    list's resourceVersion), then ``watch(version)`` again and again from the version the last
    watch returned (:func:`watch_once` with the caller's arguments). Runs in the caller's thread.
    """
    while not stop.is_set():
        try:
            version = list_once()
            while version and not stop.is_set():
                version = watch(version)
        except Stopped:
            return
        except Relist as why:
            logger.info("watching %s lost its place (%s): listing again", name, why)
        except Exception as exc:
            if stop.is_set():
                return
            logger.warning("watching %s failed (%s); listing again", name, exc)
            stop.wait(error_pause)


@dataclass
class WatchedKind:
    """One thing to list and watch.

    ``name`` names the thread and the log lines; ``synced_as`` is what counts towards
    :meth:`ListWatch.synced` (several kinds — one per namespace — may count as one; default:
    ``name``). ``apply_list`` gets the full list (replace what is known); ``apply_event`` one
    object and whether it was deleted."""

    name: str
    list_call: Callable[..., Any]
    kwargs: dict[str, Any]
    apply_list: Callable[[list[Mapping[str, Any]]], None]
    apply_event: Callable[[Mapping[str, Any], bool], None]
    synced_as: str = ""

    @property
    def sync_key(self) -> str:
        return self.synced_as or self.name


@dataclass
class ListWatch:
    """Runs the list-then-watch loop of every kind in ``kinds`` in its own daemon thread."""

    kinds: Sequence[WatchedKind]
    logger: logging.Logger = log
    """Where a failed watch is reported (the caller's logger, so its lines keep their name)."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _synced: set[str] = field(default_factory=set)
    _threads: list[threading.Thread] = field(default_factory=list)

    def synced(self) -> bool:
        """Every kind has been listed at least once."""
        return self._synced >= {k.sync_key for k in self.kinds}

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        for kind in self.kinds:
            thread = threading.Thread(
                target=self._run, args=(kind, loop), name=f"watch-{kind.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def _run(self, kind: WatchedKind, loop: asyncio.AbstractEventLoop) -> None:
        def list_once() -> str:
            raw = kind.list_call(**kind.kwargs, _preload_content=False, _request_timeout=30)
            data = orjson.loads(raw.data)
            items = list(data.get("items") or ())

            def listed() -> None:
                kind.apply_list(items)
                self._synced.add(kind.sync_key)

            post_to(loop, listed)
            return str((data.get("metadata") or {}).get("resourceVersion") or "")

        def on_event(type_: str, obj: dict[str, Any]) -> None:
            post_to(loop, kind.apply_event, obj, type_ == "DELETED")

        list_then_watch(
            kind.name,
            list_once,
            lambda version: watch_once(kind.list_call, kind.kwargs, version, on_event, self._stop),
            self._stop,
            self.logger,
        )
