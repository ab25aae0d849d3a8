"""The `tokenfleet` command.

`crds` generates or checks the CRD YAML, `run` runs the operator, `agent` the node agent,
`gateway` the OpenAI-compatible gateway in front of the fleet, `simulate` runs a fleet scenario in
virtual time, `devfleet` drives a local fleet's cars and tanks in scaled real time.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tokenfleet import __version__


def repo_root() -> Path:
    """The source tree's root (crds/ and charts/), from any working directory: the nearest
    ancestor of the current directory holding both, else the one this package was installed
    from (an editable install)."""
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents, Path(__file__).resolve().parents[2]):
        if (candidate / "crds").is_dir() and (candidate / "charts" / "tokenfleet").is_dir():
            return candidate
    return here


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokenfleet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    crds = sub.add_parser("crds", help="write the CRD YAML in crds/ from the API models")
    crds.add_argument(
        "--out", default=None, help="output directory (default: crds/ of the source tree)"
    )
    crds.add_argument(
        "--chart-dir",
        default=None,
        help="the Helm chart's CRD templates (default: charts/tokenfleet/templates/crds of the "
        "source tree; empty to skip)",
    )
    crds.add_argument(
        "--check",
        action="store_true",
        help="exit non-zero, naming the file, when the directory differs from the models",
    )

    run = sub.add_parser("run", help="run the operator (kopf under the hood)")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], help="watch a namespace")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces")
    run.add_argument("--peering", default=None, help="kopf peering name (HA); standalone if unset")
    run.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority (the highest live one is active); default: derived from the "
        "peer identity (POD_ID, the pod name in the chart), so every replica's differs",
    )
    run.add_argument(
        "--runtime-namespace",
        default=None,
        help="namespace of the Triton runtime DaemonSet's pods (default: tokenfleet-system)",
    )
    run.add_argument("--metrics-port", type=int, default=9090, help="Prometheus metrics port")
    run.add_argument("--metrics-address", default="0.0.0.0", help="Prometheus metrics address")
    run.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness URL")
    run.add_argument(
        "--kubeconfig", default=None, help="kubeconfig (default: $KUBECONFIG, else in-cluster)"
    )
    run.add_argument("--log-format", choices=["plain", "json"], default="json")
    run.add_argument("--verbose", action="store_true")

    from tokenfleet.agent.runner import add_agent_arguments

    agent = sub.add_parser("agent", help="node agent: publish vehicle telemetry on this Node")
    add_agent_arguments(agent)

    from tokenfleet.gateway.main import add_gateway_arguments

    gateway = sub.add_parser("gateway", help="OpenAI-compatible gateway in front of the fleet")
    add_gateway_arguments(gateway)
    from tokenfleet.simulate.command import add_simulate_arguments

    simulate = sub.add_parser(
        "simulate", help="run a fleet scenario in virtual time through the placement engine"
    )
    add_simulate_arguments(simulate)
    from tokenfleet.devfleet.driver import add_devfleet_arguments

    devfleet = sub.add_parser(
        "devfleet", help="drive a local fleet's cars, tanks and site cap in scaled real time"
    )
    add_devfleet_arguments(devfleet)
    from tokenfleet.delivery.runner import add_modelcache_arguments

    modelcache = sub.add_parser(
        "modelcache", help="node model cache: fetch, verify and install models from the store"
    )
    add_modelcache_arguments(modelcache)
    from tokenfleet.batch.main import add_dispatcher_arguments

    dispatcher = sub.add_parser(
        "dispatcher", help="serve InferenceBatches: lease work units to the jobs' replicas"
    )
    add_dispatcher_arguments(dispatcher)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "crds":
        from tokenfleet.api.crdgen import crds_command

        root = repo_root()
        out = args.out if args.out is not None else str(root / "crds")
        chart = (
            args.chart_dir
            if args.chart_dir is not None
            else str(root / "charts" / "tokenfleet" / "templates" / "crds")
        )
        return crds_command(out_dir=out, check=args.check, chart_dir=chart)
    if args.command == "run":
        import os

        if args.kubeconfig:  # before the client is imported: it reads $KUBECONFIG at import
            os.environ["KUBECONFIG"] = args.kubeconfig
        from tokenfleet.controllers.main import run_command

        return run_command(args)
    if args.command == "agent":
        from tokenfleet.agent.runner import run_agent

        return run_agent(args)
    if args.command == "gateway":
        from tokenfleet.gateway.main import run_gateway

        return run_gateway(args)
    if args.command == "simulate":
        from tokenfleet.simulate.command import simulate_command

        return simulate_command(args)
    if args.command == "devfleet":
        from tokenfleet.devfleet.driver import run_devfleet

        return run_devfleet(args)
    if args.command == "modelcache":
        from tokenfleet.delivery.runner import run_modelcache

        return run_modelcache(args)
    if args.command == "dispatcher":
        from tokenfleet.batch.main import run_dispatcher

        return run_dispatcher(args)
    raise AssertionError(f"unhandled command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
