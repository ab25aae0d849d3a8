"""Keep the routing table and key store in step with Kubernetes (official client, in threads).

The loop is :class:`tokenfleet.serving.listwatch.ListWatch` (shared with the batch dispatcher):
one thread per kind lists, then watches from the list's resourceVersion; every event is handed
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
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s

from tokenfleet import GROUP, VERSION
from tokenfleet.gateway.keys import API_KEY_LABEL, KeyStore
from tokenfleet.gateway.table import RoutingTable
from tokenfleet.serving.listwatch import ListWatch, WatchedKind
from tokenfleet.serving.routing import ENDPOINTSLICE_MANAGED_BY, ENDPOINTSLICE_MANAGED_BY_LABEL

__all__ = ["KubeWatcher"]

_Kind = WatchedKind
"""The kinds :meth:`KubeWatcher._kinds` returns (the shared loop's)."""


log = logging.getLogger(__name__)


@dataclass
class KubeWatcher:
    """Watches the four kinds and feeds ``table`` and ``keys`` on ``loop``."""

    api_client: Any
    table: RoutingTable
    keys: KeyStore
    namespaces: tuple[str, ...] = ()
    _loop: ListWatch | None = None

    def synced(self) -> bool:
        """Every kind (nodes, jobs, slices, API-key Secrets) has been listed at least once."""
        return self._loop is not None and self._loop.synced()

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
                    synced_as="jobs",
                ),
                _Kind(
                    "slices" + suffix,
                    slices_call,
                    {**ns_kw, "label_selector": slices_sel},
                    self._replacer("slices", ns),
                    self.table.set_slice,
                    synced_as="slices",
                ),
                _Kind(
                    "secrets" + suffix,
                    secrets_call,
                    {**ns_kw, "label_selector": keys_sel},
                    self._key_replacer(ns),
                    self.keys.set_secret,
                    synced_as="secrets",
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
        self._loop = ListWatch(self._kinds(), logger=log)
        self._loop.start(loop)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.stop()
