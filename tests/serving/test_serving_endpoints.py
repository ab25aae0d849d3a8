"""Runtime endpoint resolution (pure)."""

from __future__ import annotations

import pytest

from tokenfleet.serving import (
    EndpointError,
    dial_allowed,
    parse_host_port,
    parse_networks,
)
from tokenfleet.serving.endpoints import format_host_port


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("10.244.3.7:1", ("10.244.3.7", 1)),
        ("triton.node-a.svc:65535", ("triton.node-a.svc", 65535)),
        ("localhost:8000", ("localhost", 8000)),
        ("[::1]:8000", ("::1", 8000)),
        ("[fd00::5]:9000", ("fd00::5", 9000)),
    ],
)
def test_parse_host_port_accepts(value: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(value) == expected
    assert format_host_port(*expected) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        " 127.0.0.1:8000",
        "127.0.0.1:8000 ",
        "127.0.0.1",
        ":8000",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:+80",
        "127.0.0.1:80x",
        "127.0.0.1:-1",
        "127.0.0.1:123456",
        "300.1.1.1:8000",
        "1.2.3:8000",
        "http://127.0.0.1:8000",
        "127.0.0.1:8000/v2",
        "user@127.0.0.1:8000",
        "::1:8000",
        "[::1]8000",
        "[nothex]:8000",
        "bad_host:8000",
        "-bad.example:8000",
        "a..b:8000",
        "a b:8000",
        "127.0.0.1:8000\n",
    ],
)
def test_parse_host_port_rejects_garbage(value: str) -> None:
    with pytest.raises(EndpointError):
        parse_host_port(value)


def test_parse_host_port_rejects_non_strings() -> None:
    with pytest.raises(EndpointError, match="must be a string"):
        parse_host_port(8000)  # type: ignore[arg-type]


def test_dial_policy_keeps_local_fleets_on_loopback() -> None:
    loopback = parse_networks("127.0.0.0/8, ::1/128")
    assert dial_allowed("127.0.0.1", loopback)
    assert dial_allowed("::1", loopback)
    assert not dial_allowed("10.244.0.7", loopback)  # a kwok pod address: data, never dialled
    assert not dial_allowed("192.168.1.20", loopback)
    assert not dial_allowed("localhost", loopback)  # names could resolve anywhere
    assert dial_allowed("10.244.0.7", parse_networks(""))  # no policy: a real cluster
    with pytest.raises(EndpointError, match="bad network 'ten'"):
        parse_networks("127.0.0.0/8,ten")
