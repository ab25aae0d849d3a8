"""The routing table: EndpointSlice conditions, the dial policy and weighted picking (pure)."""

from __future__ import annotations

from gateway_kit import job_dict, node_dict, slice_dict
from tokenfleet.gateway.table import RoutingTable, parse_slice
from tokenfleet.serving.endpoints import parse_networks


def table() -> RoutingTable:
    t = RoutingTable(dial_networks=parse_networks("127.0.0.0/8"))
    t.set_node(node_dict("rack", "127.0.0.1:9000"))
    t.set_node(node_dict("car", "127.0.0.1:9100"))
    t.set_job(job_dict("chat", "ns", [("rack", "fp16", "Rack"), ("car", "int4", "Vehicle")]))
    t.set_slice(slice_dict("chat", "ns", [("rack", "10.1.0.1", True), ("car", "10.1.0.2", True)]))
    return t


def test_conditions_follow_kubernetes_semantics() -> None:
    body = slice_dict("chat", "ns", [("a", "10.0.0.1", True)])
    body["endpoints"] += [
        {"addresses": ["10.0.0.2"], "nodeName": "b", "conditions": {}},  # nil ready = ready
        {
            "addresses": ["10.0.0.3"],
            "nodeName": "c",
            "conditions": {"ready": True, "serving": True, "terminating": True},
        },
        {"addresses": ["10.0.0.4"], "nodeName": "d", "conditions": {"ready": False}},
        {"addresses": [], "nodeName": "e"},  # no address: skipped
    ]
    parsed = parse_slice(body)
    assert parsed is not None
    _, name, service, eps = parsed
    assert (name, service) == ("chat-tokenfleet", "chat")
    assert [(e.node, e.ready, e.serving, e.terminating) for e in eps] == [
        ("a", True, True, False),
        ("b", True, True, False),
        ("c", False, True, True),  # draining: serving in-flight work, no new requests
        ("d", False, False, False),
    ]


def test_pick_weighs_outstanding_work_by_speed() -> None:
    t = table()
    job = t.job("ns", "chat")
    assert job is not None
    picks = []
    for _ in range(10):
        r = t.pick(job, 40)
        assert r is not None
        t.begin(r, 40)
        picks.append(r.target)
    assert picks.count("Rack") == 8 and picks.count("Vehicle") == 2
    rack = next(r for r in t.ready_replicas(job) if r.target == "Rack")
    assert rack.endpoint == "127.0.0.1:9000" and rack.model == "gwllama-fp16"
    assert rack.tokens_per_second == 400
    # finished work frees the replica again
    for _ in range(8):
        t.end(rack, 40)
    assert t.outstanding.get(rack.key) is None
    nxt = t.pick(job, 40)
    assert nxt is not None and nxt.target == "Rack"
    # an excluded replica (failed before its first byte) is not picked again
    other = t.pick(job, 40, exclude=[rack.key])
    assert other is not None and other.target == "Vehicle"
    assert t.pick(job, 40, exclude=[rack.key, other.key]) is None


def test_only_ready_endpoints_with_a_dialable_runtime() -> None:
    t = table()
    job = t.job("ns", "chat")
    assert job is not None
    t.set_slice(slice_dict("chat", "ns", [("rack", "10.1.0.1", False), ("car", "10.1.0.2", True)]))
    assert [r.node for r in t.ready_replicas(job)] == ["car"]
    # no annotation: the pod IP on 8000 — refused by a loopback-only dial policy
    t.set_node({"metadata": {"name": "car"}})
    assert t.ready_replicas(job) == []
    assert t.dial_endpoint("car", "10.1.0.2") is None
    assert RoutingTable().dial_endpoint("car", "10.1.0.2") == "10.1.0.2:8000"  # real cluster
    # a malformed annotation is never dialled
    t.set_node(node_dict("car", "http://127.0.0.1:9100/"))
    assert t.ready_replicas(job) == []
    # a node not (yet) in the job's placements: no variant known, not routed
    t.set_node(node_dict("car", "127.0.0.1:9100"))
    t.set_job(job_dict("chat", "ns", [("rack", "fp16", "Rack")]))
    job = t.job("ns", "chat")
    assert job is not None
    assert t.ready_replicas(job) == []
    t.set_slice(slice_dict("chat", "ns", []), deleted=True)
    t.set_job(job_dict("chat", "ns", []), deleted=True)
    assert t.job("ns", "chat") is None and t.slices == {}


def test_replace_drops_what_a_fresh_list_lacks() -> None:
    t = table()
    t.replace("nodes", [node_dict("rack", "127.0.0.1:9000")])
    assert set(t.node_endpoints) == {"rack"}
    t.replace("jobs", [])
    t.replace("slices", [])
    assert t.jobs == {} and t.slices == {}


def test_watch_events_are_split_on_lines_across_chunks() -> None:
    from tokenfleet.serving.listwatch import watch_events as _events

    class Chunks:  # the slice of urllib3's response that _events reads
        def __init__(self, chunks: list[bytes]) -> None:
            self.chunks = chunks

        def stream(self, amt: int, decode_content: bool = False) -> list[bytes]:
            return self.chunks

    lines = [
        b'{"type": "ADDED", "object": {"metadata": {"name": "a"}}}\n',
        b'{"type": "MODIFIED", "object": {"metadata": {"name": "b"}}}\n',
        b"\n",
        b'{"type": "DELETED", "object": {"metadata": {"name": "c"}}}\n',
    ]
    data = b"".join(lines)
    chunked = [data[i : i + 7] for i in range(0, len(data), 7)]  # lines cut mid-way
    events = list(_events(Chunks(chunked)))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("MODIFIED", "b"),
        ("DELETED", "c"),
    ]
    # an unterminated last line (the server cut the watch) is not half-read
    assert list(_events(Chunks([data[:-10]]))) == events[:2]
