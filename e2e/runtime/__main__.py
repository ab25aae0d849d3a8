"""``python -m e2e.runtime``: a local fleet of real tritonservers, or a model repository.

python -m e2e.runtime serve --count 3 [--model NAME ...] [--model-repository DIR]
                            [--names a,b,c] [--json-file PATH]
    Starts N servers on 127.0.0.1, prints their endpoints as one JSON line on stdout
    ({"model_repository": ..., "servers": [{"name", "pid", "http", "grpc",
    "metrics_url", "log"}]}) and stays up until SIGINT/SIGTERM (then stops them, exit 0).
    Without --model-repository a temp repository holds the default models
    (tinyllama-fp16, tinyllama-int4) plus every --model NAME.

python -m e2e.runtime write-models DIR [NAME ...]
    Writes token-generator models (default: the default models) into DIR.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from e2e.runtime.launcher import TritonFleet
from e2e.runtime.repository import DEFAULT_MODELS, write_model_repository


def _serve(args: argparse.Namespace) -> int:
    names = [n for n in args.names.split(",") if n] if args.names else None
    if names is not None and len(names) != args.count:
        print("--names needs exactly --count names", file=sys.stderr)
        return 2
    models = list(dict.fromkeys([*DEFAULT_MODELS, *args.model]))
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    fleet = TritonFleet(args.count, args.model_repository, models=models, names=names)
    try:
        fleet.start(timeout=args.timeout)
        doc = json.dumps(fleet.describe())
        if args.json_file:
            Path(args.json_file).write_text(doc + "\n")
        print(doc, flush=True)
        while not stop.wait(0.5):
            dead = [s.name for s in fleet.servers if not s.running]
            if dead:
                print(f"servers exited: {', '.join(dead)}", file=sys.stderr, flush=True)
                return 1
        return 0
    finally:
        fleet.stop()


def _write(args: argparse.Namespace) -> int:
    root = write_model_repository(Path(args.dir), args.names or list(DEFAULT_MODELS))
    print(root)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m e2e.runtime", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="run N tritonservers on 127.0.0.1 until SIGINT/SIGTERM")
    serve.add_argument("--count", type=int, default=1)
    serve.add_argument("--model", action="append", default=[], help="extra model name (repeatable)")
    serve.add_argument("--model-repository", type=Path, default=None)
    serve.add_argument("--names", default=None, help="comma-separated server names")
    serve.add_argument("--json-file", default=None, help="also write the JSON here")
    serve.add_argument("--timeout", type=float, default=60.0, help="seconds to become ready")
    serve.set_defaults(func=_serve)
    write = sub.add_parser("write-models", help="write token-generator models into DIR")
    write.add_argument("dir")
    write.add_argument("names", nargs="*")
    write.set_defaults(func=_write)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
