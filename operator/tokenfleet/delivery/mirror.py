"""A list-then-watch copy of one kind for ``tokenfleet modelcache`` (official client, a thread).

The cache used to list every InferenceJob (and read its Node, and list the VehiclePools) on
every pass: at 10,000 nodes every few seconds that is the API server's whole budget. A
:class:`Mirror` lists once, then watches from the list's resourceVersion (bookmarks on), so a
pass reads memory and the API server sends only changes; the loop is
:func:`tokenfleet.serving.listwatch.list_then_watch` (a watch that times out resumes from the last
version seen; an ERROR event (410 Gone) lists again, a failure after a short pause). Its Node is
mirrored with a ``metadata.name`` field selector (one object).

``version`` counts the changes applied, so a pass can tell that nothing changed.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from tokenfleet.serving.listwatch import list_then_watch, watch_once

__all__ = ["Mirror"]

log = logging.getLogger("tokenfleet.modelcache")

WATCH_SECONDS = 120
ERROR_PAUSE_SECONDS = 2.0


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name')}"


class Mirror:
    """Objects of one kind: ``list_call(**kwargs)`` is a list function of the official client
    (``CoreV1Api.list_node``, ``CustomObjectsApi.list_cluster_custom_object``)."""

    def __init__(self, name: str, list_call: Callable[..., Any], **kwargs: Any) -> None:
        self.name = name
        self.list_call = list_call
        self.kwargs = kwargs
        self.version = 0
        self.synced = threading.Event()
        self._objects: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._objects.values())

    def start(self) -> Mirror:
        self._thread = threading.Thread(target=self._run, name=f"mirror-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _list(self) -> str:
        resp = self.list_call(**self.kwargs, _preload_content=False, _request_timeout=60)
        body = json.loads(resp.data)
        objects = {_key(o): o for o in body.get("items") or ()}
        with self._lock:
            self._objects = objects
            self.version += 1
        self.synced.set()
        return str((body.get("metadata") or {}).get("resourceVersion") or "")

    def _apply(self, type_: str, obj: dict[str, Any]) -> None:
        with self._lock:
            if type_ == "DELETED":
                self._objects.pop(_key(obj), None)
            else:
                self._objects[_key(obj)] = obj
            self.version += 1

    def _run(self) -> None:
        list_then_watch(
            self.name,
            self._list,
            lambda version: watch_once(
                self.list_call, self.kwargs, version, self._apply, self._stop, WATCH_SECONDS
            ),
            self._stop,
            log,
            ERROR_PAUSE_SECONDS,
        )
