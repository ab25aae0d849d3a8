"""One list-then-watch loop for the processes beside the operator (the gateway, the dispatcher).

One thread per watched kind lists, then watches from the list's resourceVersion; every event is
handed to the event loop (``call_soon_threadsafe``), so what the callbacks feed is only touched
from the loop. A watch that times out is resumed from the last resourceVersion it delivered
(bookmarks included); one that fails or is told its version is gone (410) is followed by a fresh
list (which replaces what was known of the kind: ``apply_list``), after a short pause on errors.

The calls are the official client's ``list_*`` functions with ``_preload_content=False``: the
events are read as raw JSON lines (no model decoding). This module imports no Kubernetes client
itself; the callers pass the bound list functions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ERROR_PAUSE_SECONDS", "WATCH_SECONDS", "ListWatch", "WatchedKind", "watch_events"]

log = logging.getLogger(__name__)

WATCH_SECONDS = 60
"""Server-side timeout of one watch request; the watch is then resumed, not listed again."""
ERROR_PAUSE_SECONDS = 1.0


def watch_events(resp: Any) -> Iterator[dict[str, Any]]:
    """The JSON events of a watch response, one per line (raw dicts: no model decoding)."""
    buffer = b""
    for chunk in resp.stream(65536, decode_content=False):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                event = json.loads(line)
                if isinstance(event, dict):
                    yield event


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

    def _watch(self, kind: WatchedKind, loop: asyncio.AbstractEventLoop, version: str) -> str:
        """One watch from ``version``; returns the version to resume from ("" to list again)."""
        resp = kind.list_call(
            **kind.kwargs,
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _preload_content=False,
            _request_timeout=WATCH_SECONDS + 10,
        )
        try:
            for event in watch_events(resp):
                if self._stop.is_set():
                    break
                type_ = event.get("type")
                obj = event.get("object")
                if type_ == "ERROR" or not isinstance(obj, dict):
                    return ""  # e.g. 410 Gone: list again
                seen = (obj.get("metadata") or {}).get("resourceVersion")
                if seen:
                    version = str(seen)
                if type_ in ("ADDED", "MODIFIED", "DELETED"):
                    loop.call_soon_threadsafe(kind.apply_event, obj, type_ == "DELETED")
        finally:
            resp.release_conn()
        return version

    def _run(self, kind: WatchedKind, loop: asyncio.AbstractEventLoop) -> None:
        while not self._stop.is_set():
            try:
                raw = kind.list_call(**kind.kwargs, _preload_content=False, _request_timeout=30)
                data = json.loads(raw.data)
                version = str((data.get("metadata") or {}).get("resourceVersion") or "")
                items = list(data.get("items") or ())

                def listed(items: list[Mapping[str, Any]] = items) -> None:
                    kind.apply_list(items)
                    self._synced.add(kind.sync_key)

                loop.call_soon_threadsafe(listed)
                # watch from there, and resume from the last resourceVersion seen when a watch
                # times out: a full LIST (and the views rebuilt from it) only at start, after an
                # error or when the version is too old (410 Gone), as informers do
                while version and not self._stop.is_set():
                    version = self._watch(kind, loop, version)
            except Exception as exc:
                if self._stop.is_set() or loop.is_closed():
                    return
                self.logger.warning("watching %s failed (%s); listing again", kind.name, exc)
                self._stop.wait(ERROR_PAUSE_SECONDS)
