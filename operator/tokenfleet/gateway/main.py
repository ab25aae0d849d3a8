"""``tokenfleet gateway``: run the OpenAI-compatible gateway (one process, any number of them)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tokenfleet.gateway.keys import KeyStore
from tokenfleet.gateway.server import Gateway, GatewaySettings
from tokenfleet.gateway.table import RoutingTable
from tokenfleet.gateway.watch import KubeWatcher
from tokenfleet.serving.endpoints import parse_networks

__all__ = ["add_gateway_arguments", "run_gateway"]

log = logging.getLogger("tokenfleet.gateway")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def add_gateway_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address", default="0.0.0.0", help="listen address (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=8080, help="listen port (default: %(default)s)")
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="only serve jobs and keys of this namespace (repeatable; default: all)",
    )
    parser.add_argument(
        "--dial-networks",
        default=os.environ.get("TOKENFLEET_RUNTIME_DIAL_NETWORKS", ""),
        help="CIDRs runtimes may be dialled in (the operator's dial policy; default: any,"
        " or $TOKENFLEET_RUNTIME_DIAL_NETWORKS)",
    )
    parser.add_argument(
        "--requests-per-second",
        type=_positive,
        default=50.0,
        help="default per-key rate limit (a key's Secret may set its own; default: %(default)s)",
    )
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="auto",
        help="uvloop (the faster loop: less added latency per request), asyncio, or auto:"
        " uvloop when installed, else asyncio (default: %(default)s)",
    )
    parser.add_argument(
        "--request-timeout",
        type=_positive,
        default=300.0,
        help="seconds one request may take end to end (default: %(default)s)",
    )
    # the live view (tokenfleet.liveview) on this gateway's port
    parser.add_argument(
        "--live-view",
        action="store_true",
        help="serve the live fleet view at /live (needs list on tokenfleet kinds and Events)",
    )
    # /v1/files and /v1/batches
    parser.add_argument(
        "--files-uri",
        default=os.environ.get("TOKENFLEET_FILES_URI"),
        help="s3://bucket/prefix for /v1/files and /v1/batches (store credentials from "
        "$AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY, endpoint from $TOKENFLEET_S3_ENDPOINT); "
        "unset: no batch endpoints",
    )
    parser.add_argument(
        "--batch-secret",
        default="tokenfleet-batch-store",
        help="Secret, in each API key's namespace, with the store credentials the dispatcher "
        "uses for the batches created through /v1/batches (default: %(default)s)",
    )


async def _serve(args: argparse.Namespace) -> None:
    from tokenfleet.controllers.kube import api_client

    table = RoutingTable(dial_networks=parse_networks(args.dial_networks))
    keys = KeyStore(default_rate=args.requests_per_second, clock=time.monotonic)
    watcher = KubeWatcher(api_client(), table, keys, tuple(args.namespace))
    gateway = Gateway(
        table=table,
        keys=keys,
        settings=GatewaySettings(
            request_timeout_seconds=args.request_timeout,
        ),
        synced=watcher.synced,
    )
    loop = asyncio.get_running_loop()
    watcher.start(loop)
    app = gateway.app()
    if getattr(args, "live_view", False):
        from tokenfleet.liveview.server import mount_live_view, tokens_by_target

        mount_live_view(app, api_client(), lambda: tokens_by_target(gateway.metrics.registry))
    if args.files_uri:
        from tokenfleet.gateway.batches import BatchEndpoints
        from tokenfleet.store import StoreConfig, parse_s3_uri

        bucket, prefix = parse_s3_uri(args.files_uri)
        BatchEndpoints(
            store_config=StoreConfig.from_env(),
            bucket=bucket,
            prefix=prefix,
            secret_name=args.batch_secret,
            api_client=api_client(),
            authenticate=gateway._authenticate,
            resolve=gateway._resolve,
        ).register(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.address, args.port)
    await site.start()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("gateway listening on http://%s:%d/v1", args.address, args.port)
    print(f"gateway listening on http://{args.address}:{args.port}/v1", flush=True)
    try:
        await stop.wait()
    finally:
        watcher.stop()
        await runner.cleanup()


EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def loop_factory(choice: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The event loop ``--event-loop`` asks for: ``(name, factory)``. ``auto`` takes uvloop when
    it can be imported (a dependency of tokenfleet, but built for fewer platforms than Python),
    else asyncio's own; ``uvloop`` without it installed is an error naming the option."""
    if choice not in EVENT_LOOPS:
        raise ValueError(f"--event-loop: unknown loop {choice!r}, expected one of {EVENT_LOOPS}")
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError as exc:
            if choice == "uvloop":
                raise ValueError(f"--event-loop uvloop: uvloop is not installed ({exc})") from exc
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", asyncio.new_event_loop


def run_gateway(args: Any) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        name, factory = loop_factory(getattr(args, "event_loop", "auto"))
    except ValueError as exc:
        print(f"tokenfleet gateway: {exc}", file=sys.stderr)
        return 2
    log.info("event loop: %s", name)
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(args))
    return 0
