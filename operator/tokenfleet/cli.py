"""The `tokenfleet` command.

`crds` generates or checks the CRD YAML, `run` runs the operator, `agent` the node agent,
`simulate` runs a fleet scenario in virtual time.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokenfleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    crds = sub.add_parser("crds", help="write the CRD YAML in crds/ from the API models")
    crds.add_argument("--out", default="crds", help="output directory (default: crds)")
    crds.add_argument(
        "--chart-dir",
        default="charts/tokenfleet/templates/crds",
        help="the Helm chart's CRD templates (default: %(default)s; empty to skip)",
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
    run.add_argument("--priority", type=int, default=0, help="peering priority")
    run.add_argument(
        "--runtime-namespace",
        default=None,
        help="namespace of the Triton runtime DaemonSet's pods (default: tokenfleet-system)",
    )
    run.add_argument("--metrics-port", type=int, default=9090, help="Prometheus metrics port")
    run.add_argument("--metrics-address", default="0.0.0.0", help="Prometheus metrics address")
    run.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness URL")
    run.add_argument("--log-format", choices=["plain", "json"], default="json")
    run.add_argument("--verbose", action="store_true")

    from tokenfleet.agent.runner import add_agent_arguments

    agent = sub.add_parser("agent", help="node agent: publish vehicle telemetry on this Node")
    add_agent_arguments(agent)

    from tokenfleet.simulate.command import add_simulate_arguments

    simulate = sub.add_parser(
        "simulate", help="run a fleet scenario in virtual time through the placement engine"
    )
    add_simulate_arguments(simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "crds":
        from tokenfleet.api.crdgen import crds_command

        return crds_command(out_dir=args.out, check=args.check, chart_dir=args.chart_dir)
    if args.command == "run":
        from tokenfleet.controllers.main import run_command

        return run_command(args)
    if args.command == "agent":
        from tokenfleet.agent.runner import run_agent

        return run_agent(args)
    if args.command == "simulate":
        from tokenfleet.simulate.command import simulate_command

        return simulate_command(args)
    raise AssertionError(f"unhandled command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
