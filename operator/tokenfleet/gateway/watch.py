"""Keep the routing table and key store in step with Kubernetes (official client, in threads).

One thread per kind lists, then watches from the list's resourceVersion; every event is handed
to the event loop (``call_soon_threadsafe``), so the table is only touched from the loop. A
watch that times out is resumed from the last resourceVersion it delivered (bookmarks
included); one that fails or is told its version is gone (410) is followed by a fresh list
(which replaces what was known of the kind), after a short pause on errors.

Kinds: InferenceJobs, the operator's EndpointSlices
(``endpointslice.kubernetes.io/managed-by=operator.tokenfleet.io``), Nodes (the
runtime-endpoint annotation) and API-key Secrets (``tokenfleet.io/api-key=true``) — cluster-wide,
or in the given namespaces.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s

from tokenfleet import GROUP, VERSION
from tokenfleet.gateway.keys import API_KEY_LABEL, KeyStore
from tokenfleet.gateway.table import RoutingTable
from tokenfleet.serving.routing import ENDPOINTSLICE_MANAGED_BY, ENDPOINTSLICE_MANAGED_BY_LABEL

__all__ = ["KubeWatcher"]


def _events(resp: Any) -> Iterator[dict[str, Any]]:
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


log = logging.getLogger(__name__)

WATCH_SECONDS = 60
ERROR_PAUSE_SECONDS = 1.0


@dataclass
class _Kind:
    name: str
    list_call: Callable[..., Any]
    kwargs: dict[str, Any]
    apply_list: Callable[[list[Mapping[str, Any]]], None]
    apply_event: Callable[[Mapping[str, Any], bool], None]


@dataclass
class KubeWatcher:
    """Watches the four kinds and feeds ``table`` and ``keys`` on ``loop``."""

    api_client: Any
    table: RoutingTable
    keys: KeyStore
    namespaces: tuple[str, ...] = ()
    _stop: threading.Event = field(default_factory=threading.Event)
    _synced: set[str] = field(default_factory=set)
    _threads: list[threading.Thread] = field(default_factory=list)

    def synced(self) -> bool:
        """Every kind has been listed at least once."""
        return len(self._synced) >= 4

    def _kinds(self) -> list[_Kind]:
        custom = k8s.CustomObjectsApi(self.api_client)
        core = k8s.CoreV1Api(self.api_client)
        discovery = k8s.DiscoveryV1Api(self.api_client)
        slices_sel = f"{ENDPOINTSLICE_MANAGED_BY_LABEL}={ENDPOINTSLICE_MANAGED_BY}"
        keys_sel = f"{API_KEY_LABEL}=true"
        kinds = [
            _Kind(
                "nodes",
                core.list_node,
                {},
                lambda objs: self.table.replace("nodes", objs),
                self.table.set_node,
            )
        ]
        scopes: list[str | None] = list(self.namespaces) or [None]
        for ns in scopes:
            suffix = f"/{ns}" if ns else ""
            if ns is None:
                jobs_call: Callable[..., Any] = custom.list_cluster_custom_object
                jobs_kw: dict[str, Any] = {"group": GROUP, "version": VERSION}
                slices_call: Callable[..., Any] = discovery.list_endpoint_slice_for_all_namespaces
                secrets_call: Callable[..., Any] = core.list_secret_for_all_namespaces
                ns_kw: dict[str, Any] = {}
            else:
                jobs_call = custom.list_namespaced_custom_object
                jobs_kw = {"group": GROUP, "version": VERSION, "namespace": ns}
                slices_call = discovery.list_namespaced_endpoint_slice
                secrets_call = core.list_namespaced_secret
                ns_kw = {"namespace": ns}
            kinds += [
                _Kind(
                    "jobs" + suffix,
                    jobs_call,
                    {**jobs_kw, "plural": "inferencejobs"},
                    self._replacer("jobs", ns),
                    self.table.set_job,
                ),
                _Kind(
                    "slices" + suffix,
                    slices_call,
                    {**ns_kw, "label_selector": slices_sel},
                    self._replacer("slices", ns),
                    self.table.set_slice,
                ),
                _Kind(
                    "secrets" + suffix,
                    secrets_call,
                    {**ns_kw, "label_selector": keys_sel},
                    self._key_replacer(ns),
                    self.keys.set_secret,
                ),
            ]
        return kinds

    def _replacer(
        self, kind: str, namespace: str | None
    ) -> Callable[[list[Mapping[str, Any]]], None]:
        def apply(objs: list[Mapping[str, Any]]) -> None:
            if namespace is None:
                self.table.replace(kind, objs)
                return
            # namespaced: drop only this namespace's entries, then add the list
            self.table.changed()
            if kind == "jobs":
                for key in [k for k in self.table.jobs if k[0] == namespace]:
                    del self.table.jobs[key]
                for o in objs:
                    self.table.set_job(o)
            else:
                for key in [k for k in self.table.slices if k[0] == namespace]:
                    del self.table.slices[key]
                for o in objs:
                    self.table.set_slice(o)

        return apply

    def _key_replacer(self, namespace: str | None) -> Callable[[list[Mapping[str, Any]]], None]:
        def apply(objs: list[Mapping[str, Any]]) -> None:
            if namespace is None:
                self.keys.replace(objs)
                return
            for ns, name in [r for r in self.keys.by_secret if r[0] == namespace]:
                self.keys.set_secret({"metadata": {"namespace": ns, "name": name}}, deleted=True)
            for o in objs:
                self.keys.set_secret(o)

        return apply

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        for kind in self._kinds():
            thread = threading.Thread(
                target=self._run, args=(kind, loop), name=f"watch-{kind.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def _watch(self, kind: _Kind, loop: asyncio.AbstractEventLoop, version: str) -> str:
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
            for event in _events(resp):
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

    def _run(self, kind: _Kind, loop: asyncio.AbstractEventLoop) -> None:
        base = kind.name.split("/")[0]
        while not self._stop.is_set():
            try:
                raw = kind.list_call(**kind.kwargs, _preload_content=False, _request_timeout=30)
                data = json.loads(raw.data)
                version = str((data.get("metadata") or {}).get("resourceVersion") or "")
                items = list(data.get("items") or ())

                def listed(items: list[Mapping[str, Any]] = items) -> None:
                    kind.apply_list(items)
                    self._synced.add(base)

                loop.call_soon_threadsafe(listed)
                # watch from there, and resume from the last resourceVersion seen when a watch
                # times out: a full LIST (and the table rebuilt from it) only at start, after an
                # error or when the version is too old (410 Gone), as informers do
                while version and not self._stop.is_set():
                    version = self._watch(kind, loop, version)
            except Exception as exc:
                if self._stop.is_set():
                    return
                if loop.is_closed():
                    return
                log.warning("watching %s failed (%s); listing again", kind.name, exc)
                self._stop.wait(ERROR_PAUSE_SECONDS)
