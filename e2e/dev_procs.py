"""The processes of a ``make dev`` run: marked, started safely, and swept by their mark.

Every process a dev run starts (tritonservers and their Python stubs, the operator, the gateway,
``tokenfleet devfleet``, one ``tokenfleet agent`` per car) runs in its own session, so neither a
Ctrl-C in the terminal nor a SIGKILL of ``make dev`` reaches it. The run records their pids
(``dev-run.json``), but a process it started and had not recorded yet (a stop that arrived while it
was starting them) would escape both the recorded list and the cleanup. So:

* the run puts :data:`MARK` (``<state dir>|<its pid>``) in its environment before it starts
  anything; every child inherits it, and ``/proc/<pid>/environ`` shows it for the child's life;
* :func:`spawn` starts a process and adds it to the run's list with a stop signal deferred until
  both are done, so a Ctrl-C can never land between the fork and the bookkeeping;
* :func:`sweep` stops every live process carrying a mark (this run's at its end; any run's of this
  state dir before the next run starts): nothing the dev fleet started outlives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

MARK = "TOKENFLEET_DEV_RUN"
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def mark_value(state_dir: Path, pid: int | None = None) -> str:
    return f"{state_dir.resolve()}|{os.getpid() if pid is None else pid}"


def mark(state_dir: Path) -> str:
    """Mark this process's future children as this dev run's; returns the mark."""
    value = mark_value(state_dir)
    os.environ[MARK] = value
    return value


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (state first); [] when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return text.rsplit(")", 1)[1].split()


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def marked(match: Callable[[str], bool]) -> list[int]:
    """Live (not zombie) processes whose inherited :data:`MARK` satisfies ``match``."""
    prefix = f"{MARK}=".encode()
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        values = [
            v[len(prefix) :].decode(errors="replace") for v in environ if v.startswith(prefix)
        ]
        if not values or not match(values[0]):
            continue
        fields = _stat(pid)
        if fields and fields[0] != "Z":
            out.append(pid)
    return out


def of_state_dir(state_dir: Path) -> Callable[[str], bool]:
    """Matches the mark of any dev run on ``state_dir`` except this process's own."""
    prefix = f"{state_dir.resolve()}|"
    me = mark_value(state_dir)
    return lambda value: value.startswith(prefix) and value != me


def _signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def sweep(match: Callable[[str], bool], *, grace: float = 10.0) -> list[str]:
    """SIGTERM every live marked process ``match`` selects, SIGKILL what is left after ``grace``
    seconds; returns the command lines it found (for the log)."""
    pids = [p for p in marked(match) if p != os.getpid()]
    if not pids:
        return []
    found = [f"{p} {cmdline(p)[:120]}" for p in pids]
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (alive := [p for p in pids if _live(p)]):
        time.sleep(0.2)
        pids = alive
    _signal_all([p for p in pids if _live(p)], signal.SIGKILL)
    return found


def _live(pid: int) -> bool:
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


@contextlib.contextmanager
def stop_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP for the block (recorded, not masked: a masked signal would stay
    masked in the children), then deliver the first one to the handler that was in place."""
    got: list[int] = []
    old = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, lambda signum, _frame: got.append(signum))
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if got and callable(handler := old[signal.Signals(got[0])]):
            handler(got[0], None)


def spawn(
    procs: list[subprocess.Popen[bytes]], argv: Sequence[str], **kwargs: Any
) -> subprocess.Popen[bytes]:
    """``Popen(argv, start_new_session=True, **kwargs)`` appended to ``procs``, a stop deferred
    until both happened."""
    with stop_deferred():
        process = subprocess.Popen(list(argv), start_new_session=True, **kwargs)
        procs.append(process)
    return process
