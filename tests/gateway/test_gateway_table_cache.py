"""The routing table resolves a job's ready replicas once per change, not once per request, and
every kind of change (job, slice, node, a re-list) is seen by the next pick (pure)."""

from __future__ import annotations

from gateway_kit import job_dict, node_dict, slice_dict
from tokenfleet.gateway.table import JobInfo, RoutingTable
from tokenfleet.serving.endpoints import parse_networks


def table() -> RoutingTable:
    t = RoutingTable(dial_networks=parse_networks("127.0.0.0/8"))
    t.set_node(node_dict("rack", "127.0.0.1:9000"))
    t.set_node(node_dict("car", "127.0.0.1:9100"))
    t.set_job(job_dict("chat", "ns", [("rack", "fp16", "Rack"), ("car", "int4", "Vehicle")]))
    t.set_slice(slice_dict("chat", "ns", [("rack", "10.1.0.1", True), ("car", "10.1.0.2", True)]))
    return t


def _job(t: RoutingTable) -> JobInfo:
    job = t.job("ns", "chat")
    assert job is not None
    return job


def _endpoints(t: RoutingTable) -> list[str]:
    return sorted(r.endpoint for r in t.ready_replicas(_job(t)))


def test_resolved_once_between_changes() -> None:
    t = table()
    first = t.ready_replicas(_job(t))
    assert t.ready_replicas(_job(t)) is first  # no re-resolving per request
    assert sorted(r.endpoint for r in first) == ["127.0.0.1:9000", "127.0.0.1:9100"]


def test_every_change_is_seen_by_the_next_pick() -> None:
    t = table()
    assert _endpoints(t) == ["127.0.0.1:9000", "127.0.0.1:9100"]
    # a slice change: the car's endpoint drains
    t.set_slice(slice_dict("chat", "ns", [("rack", "10.1.0.1", True), ("car", "10.1.0.2", False)]))
    assert _endpoints(t) == ["127.0.0.1:9000"]
    assert t.pick(_job(t), 8) is not None and t.pick(_job(t), 8, [("127.0.0.1:9000", "x")])
    # a node change: the rack's runtime moved
    t.set_node(node_dict("rack", "127.0.0.1:9001"))
    assert _endpoints(t) == ["127.0.0.1:9001"]
    # a job change: the rack placement is gone
    t.set_job(job_dict("chat", "ns", [("car", "int4", "Vehicle")]))
    assert _endpoints(t) == []
    # a re-list of the slices
    t.replace(
        "slices",
        [slice_dict("chat", "ns", [("rack", "10.1.0.1", True), ("car", "10.1.0.2", True)])],
    )
    assert _endpoints(t) == ["127.0.0.1:9100"]
    # the watch's namespaced re-list edits the dicts and says so
    t.slices.clear()
    t.changed()
    assert _endpoints(t) == []


def test_an_older_job_object_is_resolved_for_itself() -> None:
    t = table()
    old = _job(t)
    t.ready_replicas(old)
    t.set_job(job_dict("chat", "ns", [("rack", "fp16", "Rack")]))
    assert sorted(r.node for r in t.ready_replicas(old)) == ["car", "rack"]
    assert [r.node for r in t.ready_replicas(_job(t))] == ["rack"]
