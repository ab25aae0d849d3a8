"""``tokenfleet run``: the operator process (kopf under the hood).

Imports every controller module (their decorators register the handlers in kopf's default
registry), configures logging, starts the metrics endpoint and runs kopf until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any

import kopf

from tokenfleet import metrics
from tokenfleet.controllers.settings import OperatorConfig, set_config

#: Controller modules, in import order. Each registers its kopf handlers on import.
CONTROLLER_MODULES = (
    "tokenfleet.controllers.settings",
    "tokenfleet.controllers.nodes",
    "tokenfleet.controllers.immersionpod",
    "tokenfleet.controllers.vehiclepool",
    "tokenfleet.controllers.planner",
    "tokenfleet.controllers.inferencejob",
)


def load_controllers() -> None:
    for name in CONTROLLER_MODULES:
        importlib.import_module(name)


class QuietPeriodicSuccess(logging.Filter):
    """Drop kopf's "Timer 'x' succeeded." lines: the tank and pool timers tick every few
    seconds per object, and a success says nothing a metric does not. Failures, retries and
    everything else pass; ``--verbose`` keeps them all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        message = record.getMessage()
        return not (message.startswith("Timer '") and message.endswith("' succeeded."))


def _namespaces(args: argparse.Namespace, config: OperatorConfig) -> tuple[bool, list[str]]:
    """(clusterwide, namespaces). The runtime namespace is always watched (runtime pods)."""
    if getattr(args, "all_namespaces", False) or not getattr(args, "namespace", None):
        return True, []
    namespaces = list(dict.fromkeys([*args.namespace, config.runtime_namespace]))
    return False, namespaces


def run_command(args: argparse.Namespace) -> int:
    config = OperatorConfig.from_env(
        runtime_namespace=getattr(args, "runtime_namespace", None),
    )
    set_config(config)

    log_format = kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(verbose=bool(args.verbose), log_format=log_format, log_refkey="object")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if not args.verbose:
        logging.getLogger("kopf.objects").addFilter(QuietPeriodicSuccess())

    load_controllers()
    metrics.serve(int(args.metrics_port), str(args.metrics_address))

    clusterwide, namespaces = _namespaces(args, config)
    peering: str | None = args.peering
    kwargs: dict[str, Any] = {}
    if peering:
        kwargs.update(standalone=False, peering_name=peering, priority=int(args.priority))
    else:
        kwargs.update(standalone=True)
    liveness = str(args.liveness or "").strip() or None
    logging.getLogger(__name__).info(
        "starting tokenfleet operator: %s, peering=%s, metrics=%s:%s, liveness=%s",
        "all namespaces" if clusterwide else f"namespaces {namespaces}",
        peering or "standalone",
        args.metrics_address,
        args.metrics_port,
        liveness,
    )
    try:
        kopf.run(
            clusterwide=clusterwide,
            namespaces=namespaces,
            liveness_endpoint=liveness,
            **kwargs,
        )
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    from tokenfleet.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
