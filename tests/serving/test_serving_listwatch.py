"""The one list-then-watch loop (``tokenfleet.serving.listwatch``) against a scripted API: what
it lists, where each watch resumes, when it lists again and when it pauses. The real API server's
side (timeouts, bookmarks, 410) is covered by ``e2e/test_gateway_watch.py``."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tokenfleet.serving.listwatch import Relist, Stopped, list_then_watch, post_to, watch_once


class _Response:
    """What the official client returns with ``_preload_content=False``."""

    def __init__(self, data: Any = None, events: list[dict[str, Any]] | None = None) -> None:
        self.data = json.dumps(data).encode()
        self.lines = b"".join(json.dumps(e).encode() + b"\n" for e in events or ())
        self.released = False

    def stream(self, size: int, decode_content: bool = False) -> Iterator[bytes]:
        for i in range(0, len(self.lines), 7):  # events split across chunks
            yield self.lines[i : i + 7]

    def release_conn(self) -> None:
        self.released = True


def _obj(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version}}


class _Api:
    """A list function that answers from a script: each call takes the next answer (a
    response, or an exception to raise) and records its keyword arguments."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> _Response:
        self.calls.append(kwargs)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        assert isinstance(answer, _Response)
        return answer


def test_one_watch_hands_on_changes_and_resumes_from_the_last_version_bookmarks_included() -> None:
    resp = _Response(
        events=[
            {"type": "ADDED", "object": _obj("a", "11")},
            {"type": "MODIFIED", "object": _obj("a", "12")},
            {"type": "BOOKMARK", "object": _obj("", "15")},
            {"type": "DELETED", "object": _obj("a", "16")},
            {"type": "BOOKMARK", "object": _obj("", "19")},
        ]
    )
    api = _Api(resp)
    seen: list[tuple[str, str]] = []
    version = watch_once(
        api,
        {"plural": "x"},
        "10",
        lambda t, o: seen.append((t, o["metadata"]["resourceVersion"])),
        threading.Event(),
        watch_seconds=5,
    )
    assert version == "19"
    assert seen == [("ADDED", "11"), ("MODIFIED", "12"), ("DELETED", "16")]
    call = api.calls[0]
    assert call["plural"] == "x" and call["watch"] is True
    assert call["resource_version"] == "10" and call["allow_watch_bookmarks"] is True
    assert call["timeout_seconds"] == 5 and call["_preload_content"] is False
    assert resp.released


def test_an_error_event_asks_for_a_fresh_list_and_releases_the_connection() -> None:
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
    resp = _Response(events=[{"type": "ADDED", "object": _obj("a", "11")}, gone])
    with pytest.raises(Relist, match="Expired"):
        watch_once(_Api(resp), {}, "10", lambda t, o: None, threading.Event())
    assert resp.released


def test_the_loop_resumes_timed_out_watches_lists_again_on_410_and_pauses_only_on_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    steps: list[str] = []
    pauses: list[float] = []
    lists = iter(["100", "200", "300"])

    def list_once() -> str:
        steps.append("list")
        return next(lists)

    script: list[Any] = ["110", "120", Relist("410 Gone"), "210", OSError("reset"), Stopped()]

    def watch(version: str) -> str:
        steps.append(f"watch@{version}")
        answer = script.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return str(answer)

    class _Stop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            pauses.append(timeout or 0.0)
            return False

    stop = _Stop()
    with caplog.at_level(logging.INFO):
        list_then_watch("things", list_once, watch, stop, error_pause=0.25)
    assert steps == [
        "list",
        "watch@100",
        "watch@110",  # a watch that timed out resumes where it was: no second list
        "watch@120",  # told its version is gone: a fresh list at once
        "list",
        "watch@200",
        "watch@210",  # failed: a pause, then a fresh list
        "list",
        "watch@300",  # the sink is gone: the loop ends
    ]
    assert pauses == [0.25]
    assert "things lost its place" in caplog.text and "things failed" in caplog.text


def test_the_loop_ends_when_stopped_and_a_failure_after_the_stop_is_not_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = threading.Event()

    def watch(version: str) -> str:
        stop.set()
        raise OSError("the connection closed as we stopped")

    list_then_watch("things", lambda: "1", watch, stop)
    assert "failed" not in caplog.text


def test_a_change_for_a_closed_event_loop_ends_the_watch_quietly() -> None:
    loop = asyncio.new_event_loop()
    seen: list[int] = []
    post_to(loop, seen.append, 1)
    loop.run_until_complete(asyncio.sleep(0))
    assert seen == [1]
    loop.close()
    with pytest.raises(Stopped):
        post_to(loop, seen.append, 2)
    with pytest.raises(Stopped):
        post_to(None, seen.append, 3)  # not started yet
    assert seen == [1]


class _Recorded(threading.Event):
    """A stop event that records each wait (the gathering pauses) and does not wait."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        return self.is_set()


def _chunked_server(bursts: list[list[bytes]], gap: float) -> tuple[Any, threading.Event]:
    """A loopback HTTP server answering one chunked response: its head, then each burst's
    lines (one chunk each) in one write after ``gap`` seconds (a watch's events)."""
    import http.server
    import time

    done = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            for burst in bursts:
                time.sleep(gap)
                self.wfile.write(b"".join(b"%x\r\n%s\r\n" % (len(x), x) for x in burst))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            done.set()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, done


def test_a_gathering_watch_pauses_after_an_event_it_waited_for_then_reads_on_back_to_back() -> None:
    """Over a real socket and urllib3 (what the official client returns): the first event of
    each burst was waited for, so a pause follows it; the rest of the burst, already received,
    is read without a pause; every event is delivered, in order."""
    import urllib3

    from tokenfleet.serving.listwatch import watch_events

    def line(i: int) -> bytes:
        return json.dumps({"type": "MODIFIED", "object": _obj(f"n{i}", str(i))}).encode() + b"\n"

    bursts = [[line(i) for i in range(b * 5, b * 5 + 5)] for b in range(3)]
    server, done = _chunked_server(bursts, gap=0.3)
    try:
        http = urllib3.PoolManager()
        host, port = server.server_address[:2]
        resp = http.request("GET", f"http://{host}:{port}/", preload_content=False)
        stop = _Recorded()
        seen: list[str] = []
        pauses_before: list[int] = []
        for event in watch_events(resp, gather=0.25, stop=stop):
            pauses_before.append(len(stop.waits))
            seen.append(event["object"]["metadata"]["name"])
        resp.release_conn()
        assert done.wait(5)
    finally:
        server.shutdown()
    assert seen == [f"n{i}" for i in range(15)]
    assert set(stop.waits) == {0.25}
    # a pause right after each burst's first event (waited for: 0.3 s), none before it
    for b in range(3):
        first = b * 5
        assert pauses_before[first + 1] == pauses_before[first] + 1, pauses_before
    # and the other four, already received, read back to back: one pause per burst (a read
    # pre-empted for over WAITED_SECONDS on a loaded machine could add one, not one per event)
    assert len(stop.waits) <= 4, pauses_before


def test_a_watch_that_does_not_gather_never_waits() -> None:
    from tokenfleet.serving.listwatch import watch_events

    resp = _Response(events=[{"type": "ADDED", "object": _obj("a", "1")}] * 3)
    stop = _Recorded()
    assert len(list(watch_events(resp, 0.0, stop))) == 3
    assert stop.waits == []
