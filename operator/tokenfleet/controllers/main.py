"""``tokenfleet run``: the operator process (kopf under the hood).

Builds the one :class:`~tokenfleet.controllers.context.OperatorContext` (config, clock, fleet
view, planner, runtime pool, prober, Kubernetes writer, HTTP session, ledgers), imports every
controller module (their decorators register the handlers in kopf's default registry),
configures logging, starts the metrics endpoint and runs kopf with the context as its memo until
SIGINT/SIGTERM. What starts and stops in which order is :meth:`OperatorContext.start`/``stop``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import logging
import os
import socket
import sys
from typing import Any

import kopf

from tokenfleet import metrics
from tokenfleet.controllers.context import OperatorContext, operator_memo
from tokenfleet.controllers.settings import OperatorConfig

#: The modules whose decorators register kopf handlers (their order does not matter: start and
#: stop order is written in OperatorContext.start/stop).
CONTROLLER_MODULES = (
    "tokenfleet.controllers.lifecycle",
    "tokenfleet.controllers.indexes",
    "tokenfleet.controllers.watches",
    "tokenfleet.controllers.immersionpod",
    "tokenfleet.controllers.vehiclepool",
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
        # kopf's routine successes say nothing a user acts on (the controllers
        # log what changed: loads, moves, sheds, leaks)
        if message.startswith(("Timer '", "Handler '", "Activity '")) and message.endswith(
            "' succeeded."
        ):
            return False
        return not (message.endswith(" succeeded; 0 failed.") and " is processed: " in message)


def _namespaces(args: argparse.Namespace, config: OperatorConfig) -> tuple[bool, list[str]]:
    """(clusterwide, namespaces). The runtime namespace is always watched (runtime pods)."""
    if getattr(args, "all_namespaces", False) or not getattr(args, "namespace", None):
        return True, []
    namespaces = list(dict.fromkeys([*args.namespace, config.runtime_namespace]))
    return False, namespaces


PEERING_GROUP = "kopf.dev"
PEERING_VERSION = "v1"


#: derived peering priorities lie in 1..PRIORITY_SPAN (an explicit ``--priority`` may be anything)
PRIORITY_SPAN = 2**31 - 1


def peer_identity() -> str:
    """This replica's peer identity as kopf sees it: ``POD_ID`` (the chart sets it to the pod
    name), else host and process id (a local run)."""
    pod = os.environ.get("POD_ID", "").strip()
    return pod or f"{socket.gethostname()}/{os.getpid()}"


def peering_priority(explicit: int | None, identity: str) -> int:
    """The kopf peering priority of this replica (pure).

    kopf runs only the replica with the highest priority and pauses *every* replica that shares
    the top priority ("Pausing all operators, including self"), so HA replicas need distinct
    priorities. Unless ``--priority`` is given, it is derived from the peer identity (the pod
    name, unique among live pods): a SHA-256 of it mapped into ``1..2**31-1``. Two pod names
    collide with probability about 1 in 2**31 per pair.
    """
    if explicit is not None:
        return explicit
    digest = hashlib.sha256(identity.encode()).digest()
    return 1 + int.from_bytes(digest[:8], "big") % PRIORITY_SPAN


class PeeringError(RuntimeError):
    """The peering object could not be made ready (CRD missing, no permission, API down)."""


def ensure_peering(name: str, clusterwide: bool, namespaces: list[str]) -> list[str]:
    """Create kopf's peering object(s) for ``--peering NAME`` unless they exist.

    kopf with a mandatory peering stays paused until its peering object exists, and it never
    creates one itself: ``ClusterKopfPeering NAME`` for an operator of all namespaces, else
    ``KopfPeering NAME`` in each watched namespace. Returns what was created (for the log).
    """
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import HTTPError

    try:
        config.load_config()
    except ConfigException as exc:
        raise PeeringError(
            f"no Kubernetes credentials to create the peering object: {exc}"
        ) from exc
    api = client.CustomObjectsApi()
    kind = "ClusterKopfPeering" if clusterwide else "KopfPeering"
    plural = f"{kind.lower()}s"
    created: list[str] = []
    for namespace in [None] if clusterwide else namespaces:
        body: dict[str, Any] = {
            "apiVersion": f"{PEERING_GROUP}/{PEERING_VERSION}",
            "kind": kind,
            "metadata": {"name": name},
        }
        where = f"{kind} {name}" + ("" if namespace is None else f" in namespace {namespace}")
        try:
            if namespace is None:
                api.create_cluster_custom_object(PEERING_GROUP, PEERING_VERSION, plural, body)
            else:
                api.create_namespaced_custom_object(
                    PEERING_GROUP, PEERING_VERSION, namespace, plural, body
                )
        except ApiException as exc:
            if exc.status == 409:  # AlreadyExists: another replica (or the last run) made it
                continue
            if exc.status == 404:
                raise PeeringError(
                    f"cannot create {where}: the {plural}.{PEERING_GROUP} CRD is missing (or the "
                    f"namespace is); install the chart with operator.replicas > 1 or apply kopf's "
                    f"peering CRDs"
                ) from exc
            raise PeeringError(f"cannot create {where}: {exc.status} {exc.reason}") from exc
        except HTTPError as exc:  # connection refused, TLS, timeouts (after urllib3's retries)
            raise PeeringError(f"cannot create {where}: {exc}") from exc
        created.append(where)
    return created


def check_cluster(timeout: int = 10) -> str | None:
    """``None`` when the Kubernetes API answers ``/version``; else one line saying why not
    (no credentials, unreachable, refused)."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import HTTPError

    kubeconfig = os.environ.get("KUBECONFIG") or None
    try:
        if kubeconfig is not None or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            path = kubeconfig or os.path.expanduser("~/.kube/config")
            if not os.path.isfile(path):
                raise ConfigException(f"kubeconfig {path} does not exist and not in a pod")
            config.load_kube_config(config_file=path)
        else:
            config.load_incluster_config()
    except ConfigException as exc:
        return (
            f"no Kubernetes credentials ({exc}); pass --kubeconfig, set KUBECONFIG or run "
            f"in a pod with a ServiceAccount"
        )
    configuration: Any = client.Configuration
    host = configuration.get_default_copy().host
    api_client: Any = client.ApiClient()
    try:
        client.VersionApi(api_client).get_code(_request_timeout=timeout)
    except ApiException as exc:
        return f"the Kubernetes API at {host} answered {exc.status} {exc.reason}"
    except (HTTPError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return f"cannot reach the Kubernetes API at {host}: {reason}"
    finally:
        api_client.close()
    return None


def run_command(args: argparse.Namespace) -> int:
    kubeconfig = getattr(args, "kubeconfig", None)
    if kubeconfig:
        if not os.path.isfile(kubeconfig):
            print(f"tokenfleet run: --kubeconfig {kubeconfig}: no such file", file=sys.stderr)
            return 2
        os.environ["KUBECONFIG"] = kubeconfig  # kopf, the client and ensure_peering read it
    problem = check_cluster()
    if problem is not None:
        print(f"tokenfleet run: {problem}", file=sys.stderr)
        return 2
    config = OperatorConfig.from_env(
        runtime_namespace=getattr(args, "runtime_namespace", None),
    )
    context = OperatorContext.build(config)

    log_format = kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(verbose=bool(args.verbose), log_format=log_format, log_refkey="object")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if not args.verbose:
        logging.getLogger("kopf.objects").addFilter(QuietPeriodicSuccess())
        for handler in logging.getLogger().handlers:  # kopf.activities.* too
            handler.addFilter(QuietPeriodicSuccess())

    load_controllers()
    metrics.record_build_info()
    metrics.serve(int(args.metrics_port), str(args.metrics_address))

    clusterwide, namespaces = _namespaces(args, config)
    peering: str | None = args.peering
    kwargs: dict[str, Any] = {}
    if peering:
        identity = peer_identity()
        priority = peering_priority(getattr(args, "priority", None), identity)
        kwargs.update(standalone=False, peering_name=peering, priority=priority)
        logging.getLogger(__name__).info(
            "peering %s as %s with priority %d", peering, identity, priority
        )
        try:
            created = ensure_peering(peering, clusterwide, namespaces)
        except PeeringError as exc:
            logging.getLogger(__name__).error("%s", exc)
            return 2
        if created:
            logging.getLogger(__name__).info("created the peering object: %s", ", ".join(created))
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
            memo=operator_memo(context),
            **kwargs,
        )
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    from tokenfleet.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
