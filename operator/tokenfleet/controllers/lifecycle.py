"""The operator's one startup and one cleanup handler, and its liveness probes.

Startup and shutdown order is written in :meth:`OperatorContext.start` and
:meth:`OperatorContext.stop`, not implied by the import order of the controller modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from tokenfleet.controllers.context import MEMO_KEY, OperatorContext, context_of
from tokenfleet.controllers.planner import raise_if_ended
from tokenfleet.controllers.settings import OperatorConfig


@kopf.on.startup(id="tokenfleet_start")
async def start_operator(
    settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any
) -> None:
    """Configure kopf and start the operator's background parts (kopf passes every index as a
    keyword argument: live views, attached to the fleet view)."""
    if MEMO_KEY not in memo:
        # run by plain `kopf run -m tokenfleet.controllers.…` (no memo to hand in): the context
        # is built here, from the environment, as `tokenfleet run` would build it
        memo[MEMO_KEY] = OperatorContext.build(OperatorConfig.from_env())
    indexes = {k: v for k, v in kwargs.items() if isinstance(v, Mapping)}
    await context_of(memo).start(settings, indexes, logger)


@kopf.on.cleanup(id="tokenfleet_stop")
async def stop_operator(memo: kopf.Memo, **_: Any) -> None:
    await context_of(memo).stop()


@kopf.on.probe(id="planner")
def planner_probe(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    context = context_of(memo)
    planner = context.planner
    raise_if_ended(planner.task, "planner")
    age = (
        None
        if planner.last_plan_monotonic is None
        else round(context.clock.monotonic() - planner.last_plan_monotonic, 3)
    )
    return {"lastPlanAgeSeconds": age, "lastError": planner.last_error}


@kopf.on.probe(id="runtimeProber")
def runtime_prober_probe(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    prober = context_of(memo).prober
    raise_if_ended(prober.task, "runtime prober")
    return {"enabled": prober.enabled, "failingRuntimes": len(prober.failing)}


@kopf.on.probe(id="throughputMeter")
def throughput_meter_probe(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    meter = context_of(memo).throughput
    raise_if_ended(meter.task, "throughput meter")
    return {"enabled": meter.enabled}
