"""Where a node's Triton runtime listens (pure functions over plain Kubernetes dicts).

Control traffic (load/unload/health/metrics) goes to the node annotation
``tokenfleet.io/runtime-endpoint: HOST:PORT`` (Triton's HTTP port) when present — behind NAT/VPN
and in the local fleet on 127.0.0.1 — else to the runtime pod's IP on Triton's HTTP port (the
planner resolves this from its indexes). A malformed annotation is a telemetry problem, never
silently dialled. ``dial_allowed`` is the safety net that keeps local fleets on loopback.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from tokenfleet.serving.errors import EndpointError

__all__ = [
    "RUNTIME_ENDPOINT_ANNOTATION",
    "TRITON_GRPC_PORT",
    "TRITON_HTTP_PORT",
    "TRITON_METRICS_PORT",
    "dial_allowed",
    "format_host_port",
    "parse_host_port",
    "parse_networks",
]

RUNTIME_ENDPOINT_ANNOTATION = "tokenfleet.io/runtime-endpoint"
TRITON_HTTP_PORT = 8000
TRITON_GRPC_PORT = 8001
TRITON_METRICS_PORT = 8002

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_PORT_RE = re.compile(r"^[0-9]{1,5}$")


def parse_host_port(value: str) -> tuple[str, int]:
    """Strictly parse ``HOST:PORT`` and return ``(host, port)``.

    HOST is an IPv4 address, a bracketed IPv6 address (``[::1]:8000``, returned without
    brackets) or an RFC 1123 DNS name (≤ 253 chars). PORT is 1-65535 in plain decimal digits.
    No scheme, path, userinfo, whitespace or empty parts. Raises :class:`EndpointError`.
    """
    if not isinstance(value, str):
        raise EndpointError(
            f"runtime endpoint must be a string HOST:PORT, got {type(value).__name__}"
        )
    if value != value.strip() or not value or any(c.isspace() for c in value):
        raise EndpointError(f"runtime endpoint {value!r}: whitespace or empty, want HOST:PORT")
    if "/" in value or "@" in value or "?" in value or "#" in value:
        raise EndpointError(f"runtime endpoint {value!r}: want HOST:PORT (no scheme, path or user)")
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or value[end + 1 : end + 2] != ":":
            raise EndpointError(f"runtime endpoint {value!r}: want [IPv6]:PORT")
        host, port_text = value[1:end], value[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise EndpointError(f"runtime endpoint {value!r}: bad IPv6 address {host!r}") from exc
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise EndpointError(f"runtime endpoint {value!r}: want HOST:PORT")
        if ":" in host:
            raise EndpointError(f"runtime endpoint {value!r}: bracket IPv6 hosts as [addr]:PORT")
        if re.fullmatch(r"[0-9.]+", host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError as exc:
                raise EndpointError(
                    f"runtime endpoint {value!r}: bad IPv4 address {host!r}"
                ) from exc
        elif len(host) > 253 or not _HOSTNAME_RE.match(host):
            raise EndpointError(f"runtime endpoint {value!r}: bad host name {host!r}")
    if not _PORT_RE.match(port_text):
        raise EndpointError(f"runtime endpoint {value!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise EndpointError(f"runtime endpoint {value!r}: port {port} out of range 1-65535")
    return host, port


def format_host_port(host: str, port: int) -> str:
    """``HOST:PORT``, bracketing IPv6 hosts."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated CIDRs (``"127.0.0.0/8,::1/128"``); empty means no restriction."""
    networks = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise EndpointError(f"bad network {part!r} in {value!r}: {exc}") from exc
    return tuple(networks)


def dial_allowed(
    host: str, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    """May the operator send control traffic to ``host``?

    With no networks configured, any host may be dialled (a real cluster). With networks (the
    local fleet and tests: ``127.0.0.0/8``), only IP literals inside them; host names never,
    since resolving them could land anywhere.
    """
    allowed = tuple(networks)
    if not allowed:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(ip in net for net in allowed)
