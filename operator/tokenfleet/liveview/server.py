"""The live view's routes, mounted on the gateway (``tokenfleet gateway --live-view``).

``GET /live`` is one self-contained HTML page (no external assets) that polls
``GET /live/state`` every second: the JSON of :func:`~tokenfleet.liveview.state.build_state`
from ImmersionPods, VehiclePools, InferenceJobs and the Events on them (read through the
Kubernetes API with the gateway's credentials: list on those kinds and on Events), and the
gateway's own ``tokenfleet_gateway_tokens_out_total`` turned into tokens/s by target.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from tokenfleet.liveview.page import PAGE
from tokenfleet.liveview.state import build_state

__all__ = ["LiveView", "mount_live_view", "tokens_by_target"]

GROUP = "tokenfleet.io"
VERSION = "v1alpha1"
EVENT_KINDS = ("InferenceJob", "ImmersionPod", "VehiclePool")


def tokens_by_target(registry: CollectorRegistry) -> dict[str, float]:
    """Total tokens the gateway sent, by target (Rack/Vehicle), from its registry."""
    out: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "tokenfleet_gateway_tokens_out_total":
                target = sample.labels.get("target", "")
                out[target] = out.get(target, 0.0) + float(sample.value)
    return out


class LiveView:
    """Reads the cluster and measures the token rate (one per gateway)."""

    def __init__(
        self,
        api: Any,
        tokens_total: Callable[[], Mapping[str, float]],
        *,
        clock: Callable[[], float] = time.monotonic,
        window_s: float = 10.0,
    ) -> None:
        from kubernetes import client

        self.custom: Any = client.CustomObjectsApi(api)
        self.core: Any = client.CoreV1Api(api)
        self.tokens_total = tokens_total
        self.clock = clock
        self.window_s = window_s
        self.samples: list[tuple[float, dict[str, float]]] = []

    def rates(self) -> dict[str, float]:
        """Tokens/s by target over the last ``window_s`` (from this view's own samples)."""
        now = self.clock()
        self.samples.append((now, dict(self.tokens_total())))
        self.samples = [s for s in self.samples if now - s[0] <= self.window_s] or self.samples[-1:]
        (t0, first), (t1, last) = self.samples[0], self.samples[-1]
        if t1 <= t0:
            return dict.fromkeys(last, 0.0)
        return {k: max(0.0, (v - first.get(k, 0.0)) / (t1 - t0)) for k, v in last.items()}

    def read(self) -> dict[str, Any]:
        """One snapshot (blocking API calls: run it in a thread)."""

        def cluster(plural: str) -> list[Any]:
            return list(self.custom.list_cluster_custom_object(GROUP, VERSION, plural)["items"])

        jobs = self.custom.list_cluster_custom_object(GROUP, VERSION, "inferencejobs")["items"]
        events: list[dict[str, Any]] = []
        for kind in EVENT_KINDS:
            raw = self.core.list_event_for_all_namespaces(
                field_selector=f"involvedObject.kind={kind}", _preload_content=False
            )
            events += json.loads(raw.data).get("items") or []
        return build_state(
            cluster("immersionpods"),
            cluster("vehiclepools"),
            jobs,
            [e for e in events if e.get("reportingComponent") == "tokenfleet-operator"
             or (e.get("source") or {}).get("component") == "tokenfleet-operator"
             or e.get("involvedObject", {}).get("kind") == "InferenceJob"],
            self.rates(),
            now=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )  # fmt: skip

    async def page(self, _: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def state(self, _: web.Request) -> web.Response:
        try:
            doc = await asyncio.to_thread(self.read)
        except Exception as error:  # the API is away: say so on the page
            return web.json_response({"error": f"{type(error).__name__}: {error}"}, status=503)
        return web.json_response(doc)


def mount_live_view(
    app: web.Application, api: Any, tokens_total: Callable[[], Mapping[str, float]]
) -> LiveView:
    """Add ``/live`` and ``/live/state`` to ``app``."""
    view = LiveView(api, tokens_total)
    app.router.add_get("/live", view.page)
    app.router.add_get("/live/state", view.state)
    return view
