"""Many model-control endpoints in one process, on 127.0.0.1, for ``bench/scale.py``.

A fleet-scale bench places 150 replicas over a few hundred cars; a real tritonserver per car
does not fit the machine. Each runtime here answers the part of Triton's HTTP/REST protocol the
operator uses for model control and health (``/v2/health/*``, ``GET /v2``, repository
``load``/``unload``/``index``, ``/v2/models/{m}/ready``, and Prometheus text on HTTP port + 2)
with its own set of loaded models, so a load returns at once and the bench times the operator,
not model loads. Nothing serves tokens: the end-to-end serving path is measured with real
tritonservers by ``bench/unplug.py`` and the e2e tests.

``python -m bench.scalekit.runtimes --count N`` prints ``{"endpoints": ["127.0.0.1:P", ...]}``
on one line once every port listens, and runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
from typing import Any

from aiohttp import web

METRICS_OFFSET = 2


def _bind_pair(start: int) -> tuple[socket.socket, socket.socket, int]:
    """Two listening sockets on 127.0.0.1: P and P + METRICS_OFFSET, from ``start`` upwards."""
    port = start
    while port < 65000:
        socks: list[socket.socket] = []
        try:
            for p in (port, port + METRICS_OFFSET):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", p))
                s.listen(64)
                socks.append(s)
            return socks[0], socks[1], port
        except OSError:
            for s in socks:
                s.close()
            port += 3
    raise RuntimeError("no free port pair on 127.0.0.1")


def _app(loaded: set[str]) -> web.Application:
    async def ok(_: web.Request) -> web.Response:
        return web.Response()

    async def metadata(_: web.Request) -> web.Response:
        return web.json_response({"name": "triton", "version": "2.51.0", "extensions": []})

    async def load(request: web.Request) -> web.Response:
        loaded.add(request.match_info["model"])
        return web.Response()

    async def unload(request: web.Request) -> web.Response:
        loaded.discard(request.match_info["model"])
        return web.Response()

    async def index(_: web.Request) -> web.Response:
        rows = [{"name": m, "version": "1", "state": "READY"} for m in sorted(loaded)]
        return web.json_response(rows)

    async def model_ready(request: web.Request) -> web.Response:
        return web.Response(status=200 if request.match_info["model"] in loaded else 400)

    app = web.Application()
    app.router.add_get("/v2/health/live", ok)
    app.router.add_get("/v2/health/ready", ok)
    app.router.add_get("/v2", metadata)
    app.router.add_post("/v2/repository/models/{model}/load", load)
    app.router.add_post("/v2/repository/models/{model}/unload", unload)
    app.router.add_post("/v2/repository/index", index)
    app.router.add_get("/v2/models/{model}/ready", model_ready)
    return app


def _metrics_app(loaded: set[str]) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        lines = ["nv_cpu_memory_total_bytes 68719476736", "nv_cpu_memory_used_bytes 1073741824"]
        lines += [f'nv_inference_request_success{{model="{m}",version="1"}} 0' for m in loaded]
        return web.Response(text="\n".join(lines) + "\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


async def serve(count: int, start_port: int) -> None:
    runners: list[web.AppRunner] = []
    endpoints: list[str] = []
    port = start_port
    for _ in range(count):
        http_sock, metrics_sock, port = _bind_pair(port)
        loaded: set[str] = set()
        for app, sock in ((_app(loaded), http_sock), (_metrics_app(loaded), metrics_sock)):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.SockSite(runner, sock).start()
            runners.append(runner)
        endpoints.append(f"127.0.0.1:{port}")
        port += 3
    print(json.dumps({"endpoints": endpoints}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--start-port", type=int, default=31000)
    args: Any = parser.parse_args(argv)
    asyncio.run(serve(args.count, args.start_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
