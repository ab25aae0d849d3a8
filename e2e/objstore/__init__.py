"""A real S3-compatible object store on 127.0.0.1 for tests and ``make dev``: SeaweedFS's
``weed mini`` (master, volume server, filer and S3 gateway in one process) built from its Go
module by ``e2e/objstore/build.sh`` (``make objstore-build``) into ``.bin/weed``.

::

    from e2e.objstore import ObjectStoreServer

    with ObjectStoreServer(tmp_dir, buckets=["models"]) as store:
        store.endpoint        # "http://127.0.0.1:PORT"
        store.access_key, store.secret_key
        store.env()           # TOKENFLEET_S3_ENDPOINT + AWS_* for a subprocess
        store.store_config()  # tokenfleet.store.StoreConfig for the product's client

    python -m e2e.objstore serve [--dir D] [--bucket models]   # prints one JSON line, runs until ^C

Everything listens on 127.0.0.1 only (``-ip.bind``), on ports picked free at start; SeaweedFS's
telemetry to its project server is switched off (``-master.telemetry=false``), and WebDAV, the
admin UI, Iceberg and Lance endpoints are disabled. The S3 gateway enforces SigV4 with one admin
identity (random access/secret key per start, written to ``<dir>/s3.json``). Readiness is a real
signed round trip: each bucket is created and a probe object written, read back and deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["WEED_BIN_ENV", "ObjectStoreError", "ObjectStoreServer", "default_weed_binary"]

REPO = Path(__file__).resolve().parents[2]
WEED_BIN_ENV = "TOKENFLEET_WEED_BIN"
LOOPBACK = "127.0.0.1"


class ObjectStoreError(RuntimeError):
    """The object store did not start (the message carries the tail of its log)."""


def default_weed_binary() -> Path:
    """``$TOKENFLEET_WEED_BIN`` or ``<repo>/.bin/weed``."""
    env = os.environ.get(WEED_BIN_ENV)
    return Path(env) if env else REPO / ".bin" / "weed"


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports whose +10000 neighbour is free too (SeaweedFS
    defaults a gRPC port to HTTP+10000; every gRPC port is set explicitly, but keeping the
    neighbour free avoids surprises)."""
    ports: list[int] = []
    holders: list[socket.socket] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
            holders.append(sock)
            if port > 55000 or port in ports:
                continue
            ports.append(port)
    finally:
        for sock in holders:
            sock.close()
    return ports


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setsid()


class ObjectStoreServer:
    """One ``weed mini`` process on loopback with SigV4 credentials. Context manager."""

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        buckets: Iterable[str] = (),
        binary: Path | str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self._own_dir: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._own_dir = tempfile.TemporaryDirectory(prefix="tokenfleet-objstore-")
            data_dir = self._own_dir.name
        self.dir = Path(data_dir).resolve()
        self.buckets = list(buckets)
        self.binary = Path(binary) if binary is not None else default_weed_binary()
        self.access_key = access_key or "tf" + secrets.token_hex(8)
        self.secret_key = secret_key or secrets.token_urlsafe(24)
        self.die_with_parent = die_with_parent
        self.ports: dict[str, int] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    # ---- addresses and credentials --------------------------------------------------------

    @property
    def port(self) -> int:
        return self.ports["s3"]

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "weed.log"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a process that talks to the store (the product reads these)."""
        env = dict(os.environ if base is None else base)
        env.update(
            TOKENFLEET_S3_ENDPOINT=self.endpoint,
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret_key,
            AWS_DEFAULT_REGION="us-east-1",
        )
        return env

    def secret_data(self) -> dict[str, str]:
        """``stringData`` for a Kubernetes Secret holding the store's endpoint and keys."""
        return {
            "endpoint": self.endpoint,
            "accessKeyId": self.access_key,
            "secretAccessKey": self.secret_key,
        }

    def store_config(self) -> Any:
        """A :class:`tokenfleet.store.StoreConfig` for this server."""
        from tokenfleet.store import StoreConfig, StoreCredentials

        return StoreConfig(self.endpoint, StoreCredentials(self.access_key, self.secret_key))

    def describe(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "buckets": self.buckets,
            "pid": self.proc.pid if self.proc else None,
            "dir": str(self.dir),
            "log": str(self.log_path),
        }

    # ---- lifecycle ------------------------------------------------------------------------

    def _write_identities(self) -> Path:
        path = self.dir / "s3.json"
        doc = {
            "identities": [
                {
                    "name": "tokenfleet-admin",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        path.write_text(json.dumps(doc, indent=2))
        path.chmod(0o600)
        return path

    def command(self) -> list[str]:
        p = self.ports
        return [
            str(self.binary),
            "mini",
            f"-dir={self.dir / 'data'}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.dir / 's3.json'}",
            f"-filer.localSocket={self.dir / 'filer.sock'}",
            f"-s3.localSocket={self.dir / 's3.sock'}",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
        ]

    def start(self, timeout: float = 90.0) -> ObjectStoreServer:
        if not self.binary.exists():
            raise ObjectStoreError(
                f"{self.binary} missing: run `make objstore-build` (e2e/objstore/build.sh)"
            )
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        self._write_identities()
        names = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc"]
        names += ["s3", "s3_grpc"]
        self.ports = dict(zip(names, _free_ports(len(names)), strict=True))
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if self.die_with_parent else os.setsid,
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "not started"
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise ObjectStoreError(f"weed exited ({self._rc()}):\n{self.log_tail()}")
            try:
                with ThreadPoolExecutor(1) as pool:  # also fine from inside a running loop
                    pool.submit(asyncio.run, self._probe()).result()
                return
            except Exception as error:
                last = f"{type(error).__name__}: {error}"
            time.sleep(0.5)
        raise ObjectStoreError(
            f"object store not ready after {timeout:.0f} s ({last}):\n{self.log_tail()}"
        )

    async def _probe(self) -> None:
        """Create the buckets and write, read back and delete a probe object (signed)."""
        from tokenfleet.store import ObjectStore

        bucket = self.buckets[0] if self.buckets else "tokenfleet-probe"
        async with ObjectStore(self.store_config(), connect_timeout_s=2, read_timeout_s=10) as s:
            for name in {*self.buckets, bucket}:
                await s.create_bucket(name)
            await s.put(bucket, ".ready-probe", b"ok")
            body = await s.get(bucket, ".ready-probe")
            await s.delete(bucket, ".ready-probe")
        if body != b"ok":
            raise ObjectStoreError(f"probe read back {body!r}")

    def _rc(self) -> str:
        return "running" if self.proc is None else f"rc={self.proc.poll()}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_dir is not None:
            self._own_dir.cleanup()
            self._own_dir = None

    def __enter__(self) -> ObjectStoreServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def running_store(data_dir: Path | str | None = None, **kwargs: Any) -> Iterator[ObjectStoreServer]:
    """``with running_store(dir, buckets=[...]) as store:`` (same as the class)."""
    with ObjectStoreServer(data_dir, **kwargs) as store:
        yield store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.objstore")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the object store until SIGINT/SIGTERM")
    serve.add_argument("--dir", default=None, help="data directory (default: a temp dir)")
    serve.add_argument("--bucket", action="append", default=[], help="bucket to create")
    serve.add_argument("--json-file", default=None, help="also write the JSON line here")
    args = parser.parse_args(argv)
    store = ObjectStoreServer(args.dir, buckets=args.bucket, die_with_parent=True)
    store.start()
    line = json.dumps(store.describe())
    print(line, flush=True)
    if args.json_file:
        Path(args.json_file).write_text(line + "\n")
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop and store.proc is not None and store.proc.poll() is None:
            time.sleep(0.5)
    finally:
        store.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
