"""What a node's cache must hold and when it may download (pure; from API objects as dicts).

* :func:`wanted_on` — from InferenceJobs (spec + status): the variants whose replicas the
  operator placed on this node (``status.placements[]`` Loading or Loaded), for jobs whose
  ``model.repositoryUri`` is ``s3://``.
* :func:`prefetch_on` — the variants the operator asked this node to fetch ahead of a placement
  (``status.prefetch``), less those already wanted by a replica;
* :func:`fetch_window` — from the node and the VehiclePools: ``None`` for a rack (downloads
  whenever needed), else the car's plugged-in/bandwidth/departure and its pool's delivery policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from tokenfleet.delivery.cache import WantedModel
from tokenfleet.delivery.rules import FetchWindow
from tokenfleet.delivery.signature import Signature
from tokenfleet.telemetry.node import NodeRole, parse_node, selector_matches

__all__ = [
    "DEFAULT_MIN_BANDWIDTH_MBPS",
    "fetch_window",
    "pool_window",
    "prefetch_on",
    "wanted_on",
]

DEFAULT_MIN_BANDWIDTH_MBPS = 20.0
DEFAULT_MARGIN_PERCENT = 150.0
_WANT_STATES = frozenset({"Loading", "Loaded"})


def _store_variants_on(
    node: str, jobs: Iterable[Mapping[str, Any]], entries: str
) -> Iterator[tuple[str, str, Mapping[str, Any], Mapping[str, Any]]]:
    """``(Triton model name, repositoryUri, variant, entry)`` for each entry of the status list
    ``entries`` (``placements`` or ``prefetch``) on ``node`` of a store-delivered job whose
    variant the spec names."""
    for job in jobs:
        spec = job.get("spec") or {}
        model = spec.get("model") or {}
        uri = str(model.get("repositoryUri") or "")
        if not uri.startswith("s3://"):
            continue
        variants = {str(v.get("name")): v for v in spec.get("variants") or () if v.get("name")}
        for entry in (job.get("status") or {}).get(entries) or ():
            if not isinstance(entry, Mapping) or entry.get("node") != node:
                continue
            v = variants.get(str(entry.get("variant")))
            if v is not None:
                name = str(v.get("tritonModelName") or f"{model.get('name')}-{v['name']}")
                yield name, uri, v, entry


def wanted_on(node: str, jobs: Iterable[Mapping[str, Any]]) -> list[WantedModel]:
    """The store-delivered variants replicas on ``node`` need, one per Triton model name."""
    out: dict[str, WantedModel] = {}
    for name, uri, v, placement in _store_variants_on(node, jobs, "placements"):
        if placement.get("state") in _WANT_STATES:
            sha = v.get("sha256")
            out.setdefault(name, _wanted(name, uri, v, str(sha) if sha else None))
    return [out[k] for k in sorted(out)]


def prefetch_on(
    node: str, jobs: Iterable[Mapping[str, Any]], wanted: Iterable[WantedModel] = ()
) -> list[WantedModel]:
    """The store-delivered variants the operator asked ``node`` to prefetch, one per Triton model
    name, leaving out the models in ``wanted`` (a replica's need comes first)."""
    taken = {w.model for w in wanted}
    out: dict[str, WantedModel] = {}
    for name, uri, v, _ in _store_variants_on(node, jobs, "prefetch"):
        if v.get("sha256") and name not in taken:
            out.setdefault(name, _wanted(name, uri, v, str(v["sha256"])))
    return [out[k] for k in sorted(out)]


def _wanted(name: str, uri: str, variant: Mapping[str, Any], sha: str | None) -> WantedModel:
    signature = variant.get("signature")
    return WantedModel(
        name, uri, sha, Signature.from_spec(signature if isinstance(signature, Mapping) else None)
    )


def pool_window(pool_spec: Mapping[str, Any]) -> tuple[float, float, float, bool]:
    """``(minBandwidthMbps, fetchTimeMarginPercent, drainLeadSeconds, requirePluggedIn)`` of a
    VehiclePool spec, with the API's defaults."""
    delivery = pool_spec.get("delivery") or {}
    battery = pool_spec.get("battery") or {}
    return (
        float(delivery.get("minBandwidthMbps", DEFAULT_MIN_BANDWIDTH_MBPS)),
        float(delivery.get("fetchTimeMarginPercent", DEFAULT_MARGIN_PERCENT)),
        float(pool_spec.get("drainLeadSeconds", 900)),
        bool(battery.get("requirePluggedIn", True)),
    )


def fetch_window(
    node_body: Mapping[str, Any], pools: Iterable[Mapping[str, Any]]
) -> FetchWindow | None:
    """``None`` for a rack; for a car, its window (an unknown pool allows nothing: the floor
    is infinite)."""
    info = parse_node(node_body)
    if info.role is not NodeRole.VEHICLE or info.vehicle is None:
        return None
    reading = info.vehicle
    floor, margin, lead, plugged = float("inf"), DEFAULT_MARGIN_PERCENT, 900.0, True
    for pool in pools:
        spec = pool.get("spec") or {}
        if selector_matches(spec.get("nodeSelector") or {}, info.labels):
            floor, margin, lead, plugged = pool_window(spec)
            break
    return FetchWindow(
        plugged_in=reading.plugged_in,
        bandwidth_mbps=reading.bandwidth_mbps,
        departure_time=reading.departure_time.timestamp() if reading.departure_time else None,
        drain_lead_seconds=lead,
        min_bandwidth_mbps=floor,
        require_plugged_in=plugged,
        margin_percent=margin,
    )
