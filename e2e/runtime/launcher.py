"""Start real ``tritonserver`` processes on 127.0.0.1 from the ``.venv-triton`` wheel.

Follows ``shared/research/triton.md``: the binary from nvidia-pytriton 0.7.0 (Triton 2.51),
``PATH`` starting with the triton venv's ``bin`` (the python-backend stub finds numpy through
``python3`` on PATH), ``LD_LIBRARY_PATH`` = the wheel's libs + the interpreter's sysconfig
``LIBDIR`` (the stub links libpython3.11), a per-server backends dir of symlinks,
``--model-control-mode=explicit``, ``--disable-auto-complete-config``, a unique
``shm-region-prefix-name`` per server, free loopback ports, and its own session so
``kill -KILL -pgid`` takes the stubs down too.

Ports: each server gets three consecutive free ports, HTTP = P, gRPC = P+1, metrics = P+2
(Triton's 8000/8001/8002 layout), so a client can derive the metrics URL from the HTTP port.

Standard library only: usable from the operator's venv, the triton venv or plain python3.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from e2e.runtime.repository import DEFAULT_MODELS, write_model_repository

__all__ = [
    "TritonFleet",
    "TritonInstall",
    "TritonServer",
    "TritonStartError",
    "allocate_ports",
    "default_triton_venv",
    "live_group_members",
]

LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]


class TritonStartError(RuntimeError):
    """tritonserver did not become ready; the message carries the tail of its log."""


def default_triton_venv() -> Path:
    """``$TOKENFLEET_TRITON_VENV`` or ``<repo>/.venv-triton``."""
    env = os.environ.get("TOKENFLEET_TRITON_VENV")
    return Path(env).resolve() if env else REPO_ROOT / ".venv-triton"


@dataclass(frozen=True)
class TritonInstall:
    """Paths of the tritonserver bundled in a venv with nvidia-pytriton installed."""

    venv: Path
    site_packages: Path
    server_root: Path
    binary: Path
    wheel_libs: Path
    python_libdir: Path
    python_version: str

    @classmethod
    def discover(cls, venv: Path | None = None) -> TritonInstall:
        """Locate the server in ``venv`` (default :func:`default_triton_venv`).

        Raises ``FileNotFoundError`` with a hint (``make triton-venv``) when it is missing.
        """
        return _discover(Path(venv).resolve() if venv else default_triton_venv())

    @property
    def available(self) -> bool:
        return self.binary.exists()

    def backend_files(self) -> list[Path]:
        """Files the python backend needs in ``<backends>/python``."""
        ts = self.server_root
        return [
            ts / "backends" / "python" / "libtriton_python.so",
            ts / "backends" / "python" / "triton_python_backend_utils.py",
            ts / "python_backend_stubs" / self.python_version / "triton_python_backend_stub",
        ]

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for tritonserver: venv bin first on PATH, wheel libs + LIBDIR."""
        env = dict(os.environ if base is None else base)
        for key in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
            env.pop(key, None)
        env["VIRTUAL_ENV"] = str(self.venv)
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        libs = [str(self.wheel_libs), str(self.python_libdir)]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(libs)
        return env


@functools.cache
def _discover(venv: Path) -> TritonInstall:
    hint = "run `make triton-venv` (or set TOKENFLEET_TRITON_VENV)"
    python = venv / "bin" / "python3"
    if not python.exists():
        raise FileNotFoundError(f"no triton venv at {venv}: {hint}")
    candidates = sorted(
        venv.glob("lib/python3.*/site-packages/pytriton/tritonserver/bin/tritonserver")
    )
    if not candidates:
        raise FileNotFoundError(f"no pytriton tritonserver in {venv}: {hint}")
    binary = candidates[-1]
    server_root = binary.parent.parent
    site_packages = server_root.parent.parent
    out = subprocess.run(
        [
            str(python),
            "-c",
            "import sys, sysconfig; "
            "print(sysconfig.get_config_var('LIBDIR')); "
            "print(f'{sys.version_info[0]}.{sys.version_info[1]}')",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    return TritonInstall(
        venv=venv,
        site_packages=site_packages,
        server_root=server_root,
        binary=binary,
        wheel_libs=site_packages / "nvidia_pytriton.libs",
        python_libdir=Path(out[0]),
        python_version=out[1],
    )


_port_lock = threading.Lock()
_reserved_ports: set[int] = set()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def allocate_ports(count: int = 3) -> tuple[int, ...]:
    """``count`` consecutive free loopback ports, not handed out before by this process."""
    with _port_lock:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOOPBACK, 0))
                base = int(sock.getsockname()[1])
            ports = tuple(range(base, base + count))
            if ports[-1] > 65535 or any(p in _reserved_ports for p in ports):
                continue
            if all(_bindable(p) for p in ports):
                _reserved_ports.update(ports)
                return ports
    raise RuntimeError("could not find consecutive free loopback ports")


def live_group_members(pgid: int) -> list[int]:
    """PIDs in process group ``pgid`` that are not zombies (from /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return sorted(members)


#: started and not yet stopped; strong references, so a server whose owner dropped it (a test
#: that failed before its stop()) is still killed at exit: it runs in its own process group
_live_servers: set[TritonServer] = set()
_counter = itertools.count()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_live_servers):
        with contextlib.suppress(Exception):
            server.stop()


class TritonServer:
    """One tritonserver process on 127.0.0.1 (explicit model control).

    ``start()`` spawns and waits until ``/v2/health/ready`` and ``/metrics`` answer; ``stop()``
    kills the process group (or ``stop(graceful=True)``: SIGINT, then SIGKILL after
    ``timeout``) and removes its temp home. Ports are picked automatically (HTTP=P,
    gRPC=P+1, metrics=P+2) unless ``ports``.
    """

    def __init__(
        self,
        model_repository: Path | str,
        *,
        name: str | None = None,
        install: TritonInstall | None = None,
        ports: tuple[int, int, int] | None = None,
        load_models: Sequence[str] = (),
        log_verbose: int = 0,
        extra_args: Sequence[str] = (),
        keep_home: bool = False,
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.index = next(_counter)
        self.name = name or f"triton-{self.index}"
        self._install = install
        self._fixed_ports = ports
        self.ports: tuple[int, int, int] | None = ports
        self.load_models = tuple(load_models)
        self.log_verbose = log_verbose
        self.extra_args = tuple(extra_args)
        self.keep_home = keep_home
        self.shm_prefix = f"tokenfleet_{os.getpid()}_{self.index}_{secrets.token_hex(3)}_"
        self.home: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    # ---- addresses ------------------------------------------------------------------

    def _port(self, i: int) -> int:
        if self.ports is None:
            raise RuntimeError(f"{self.name} has no ports yet (not started)")
        return self.ports[i]

    @property
    def http_port(self) -> int:
        return self._port(0)

    @property
    def grpc_port(self) -> int:
        return self._port(1)

    @property
    def metrics_port(self) -> int:
        return self._port(2)

    @property
    def http_endpoint(self) -> str:
        """``127.0.0.1:PORT`` of the HTTP port (what the runtime client and annotation take)."""
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log_path(self) -> Path | None:
        return self.home / "tritonserver.log" if self.home else None

    def log_tail(self, lines: int = 40) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def describe(self) -> dict[str, Any]:
        """JSON-able summary (name, pid, http, grpc, metrics_url, log)."""
        return {
            "name": self.name,
            "pid": self.pid,
            "http": self.http_endpoint,
            "grpc": self.grpc_endpoint,
            "metrics_url": self.metrics_url,
            "log": str(self.log_path) if self.log_path else None,
        }

    # ---- lifecycle ------------------------------------------------------------------

    def command(self) -> list[str]:
        install = self._install or TritonInstall.discover()
        assert self.home is not None
        args = [
            str(install.binary),
            f"--model-repository={self.model_repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={self.home / 'backends'}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--http-address={LOOPBACK}",
            f"--http-port={self.http_port}",
            f"--grpc-address={LOOPBACK}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={LOOPBACK}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            "--disable-auto-complete-config",
            "--exit-timeout-secs=5",
            f"--log-verbose={self.log_verbose}",
        ]
        args += [f"--load-model={m}" for m in self.load_models]
        return args + list(self.extra_args)

    def spawn(self) -> None:
        """Start the process without waiting for readiness (see :meth:`wait_ready`)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        install = self._install = self._install or TritonInstall.discover()
        if self.home is None:
            self.home = Path(tempfile.mkdtemp(prefix=f"tokenfleet-{self.name}-"))
            backend_dir = self.home / "backends" / "python"
            backend_dir.mkdir(parents=True)
            for src in install.backend_files():
                (backend_dir / src.name).symlink_to(src)
        if self._fixed_ports is None:
            p = allocate_ports(3)
            self.ports = (p[0], p[1], p[2])
        else:
            self.ports = self._fixed_ports
        assert self.log_path is not None
        self._log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.home,
            env=install.environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _live_servers.add(self)

    def _probe_ready(self, timeout: float = 0.5) -> bool:
        """HTTP says ready and the metrics endpoint answers: Triton opens its metrics port a
        moment after HTTP turns ready, and clients of this launcher read both."""
        for url in (f"http://{self.http_endpoint}/v2/health/ready", self.metrics_url):
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    if int(resp.status) != 200:
                        return False
            except (urllib.error.URLError, OSError, ValueError):
                return False
        return True

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll ``/v2/health/ready`` and the metrics endpoint; raise :class:`TritonStartError`
        (with the log tail) if the process exits or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None:
                raise TritonStartError(f"{self.name} was not started")
            code = self.process.poll()
            if code is not None:
                raise TritonStartError(
                    f"{self.name} exited with {code} before ready:\n{self.log_tail()}"
                )
            if self._probe_ready():
                return
            if time.monotonic() >= deadline:
                raise TritonStartError(
                    f"{self.name} not ready after {timeout:.1f}s:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def start(self, timeout: float = 30.0, attempts: int = 3) -> TritonServer:
        """Spawn and wait until ready. With automatic ports, an early exit (a port taken
        between probing and binding) is retried on fresh ports up to ``attempts`` times."""
        for attempt in range(1, attempts + 1):
            self.spawn()
            try:
                self.wait_ready(timeout)
                return self
            except TritonStartError:
                self._terminate()
                if self._fixed_ports is not None or attempt == attempts:
                    self.stop()
                    raise
        raise AssertionError("unreachable")

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def _terminate(self, graceful: bool = False, timeout: float = 10.0) -> int | None:
        proc = self.process
        if proc is None:
            return None
        if graceful and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        # Always KILL the group: the python-backend stubs live in it too.
        self._signal_group(signal.SIGKILL)
        code = proc.wait()
        # The python-backend stubs are reparented when the server dies; wait (briefly) until
        # no live member of the group is left. Zombies do not count: here PID 1 reaps
        # reparented children only every ~2 s, but a zombie holds no ports, memory or shm.
        deadline = time.monotonic() + 5.0
        while live_group_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            with contextlib.suppress(OSError):
                region.unlink()
        _live_servers.discard(self)
        return code

    def restart(self, timeout: float = 30.0) -> TritonServer:
        """Kill the server and start it again on the same ports (a runtime crash and recovery:
        its endpoint stays valid, every model is gone until loaded again)."""
        self._terminate(graceful=False)
        ports = self.ports
        fixed, self._fixed_ports = self._fixed_ports, ports
        try:
            return self.start(timeout, attempts=1)
        finally:
            self._fixed_ports = fixed

    def kill(self) -> None:
        """SIGKILL the process group now (simulates a crashed runtime); keeps the home dir."""
        self._terminate(graceful=False)

    def stop(self, graceful: bool = False, timeout: float = 10.0) -> None:
        """Stop the server (SIGKILL to its group, or SIGINT first when ``graceful``) and remove
        its temp home unless ``keep_home``. Idempotent."""
        self._terminate(graceful=graceful, timeout=timeout)
        if self.home is not None and not self.keep_home:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None

    def __enter__(self) -> TritonServer:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.http_endpoint if self.ports else "not started"
        return f"<TritonServer {self.name} {where} pid={self.pid}>"


class TritonFleet:
    """N tritonservers started concurrently (a context manager).

    ``model_repository=None`` writes a temp repository with ``models`` (default
    :data:`~e2e.runtime.repository.DEFAULT_MODELS`) and removes it on stop.
    """

    def __init__(
        self,
        count: int,
        model_repository: Path | str | None = None,
        *,
        models: Iterable[str] = DEFAULT_MODELS,
        names: Sequence[str] | None = None,
        **server_kwargs: Any,
    ) -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        if names is not None and len(names) != count:
            raise ValueError("names must have one entry per server")
        self._own_repo: Path | None = None
        if model_repository is None:
            self._own_repo = Path(tempfile.mkdtemp(prefix="tokenfleet-models-"))
            write_model_repository(self._own_repo, list(models))
            model_repository = self._own_repo
        self.model_repository = Path(model_repository).resolve()
        self.servers = [
            TritonServer(self.model_repository, name=names[i] if names else None, **server_kwargs)
            for i in range(count)
        ]

    @property
    def endpoints(self) -> list[str]:
        """HTTP endpoints ``127.0.0.1:PORT``, in server order."""
        return [s.http_endpoint for s in self.servers]

    def start(self, timeout: float = 60.0) -> TritonFleet:
        """Start all servers at once; if any fails, stop them all and raise."""
        try:
            if self.servers:
                with ThreadPoolExecutor(max_workers=len(self.servers)) as pool:
                    for fut in [pool.submit(s.start, timeout) for s in self.servers]:
                        fut.result()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every server (SIGKILL to each group) and remove the temp repository."""
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.stop()
        if self._own_repo is not None:
            shutil.rmtree(self._own_repo, ignore_errors=True)
            self._own_repo = None

    def describe(self) -> dict[str, Any]:
        return {
            "model_repository": str(self.model_repository),
            "servers": [s.describe() for s in self.servers],
        }

    def __len__(self) -> int:
        return len(self.servers)

    def __getitem__(self, i: int) -> TritonServer:
        return self.servers[i]

    def __enter__(self) -> TritonFleet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
