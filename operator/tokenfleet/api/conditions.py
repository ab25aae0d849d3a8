"""Conditions on raw status: metav1.Condition dicts as stored in ``status.conditions``.

A JSON merge patch replaces lists, so callers rebuild the whole list and patch it:

    conditions = set_condition(status.get("conditions"), "Ready", True, "Serving",
                               "3/3 replicas loaded", observed_generation=meta["generation"])
    patch.status["conditions"] = conditions

``set_condition`` keeps ``lastTransitionTime`` unless ``status`` flips, never mutates its input
and keeps the list order (new types are appended), so an unchanged condition gives an equal list
and the caller can skip the patch.

kstatus (kubernetes-sigs/cli-utils): ``Reconciling`` and ``Stalled`` are "abnormal-true"
conditions, present only while True; :func:`set_kstatus` writes Ready/Reconciling/Stalled that way
and :func:`kstatus` computes the kstatus result (Current/InProgress/Failed) of an object.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"

ConditionDict = dict[str, Any]
StatusValue = Literal["True", "False", "Unknown"]

_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
_MAX_MESSAGE = 32768


def rfc3339(moment: datetime | None = None) -> str:
    """``moment`` (default: now) as an RFC 3339 UTC timestamp with second precision."""
    moment = moment or datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("naive datetime: pass an aware datetime (UTC)")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_value(status: bool | str) -> StatusValue:
    if status is True:
        return "True"
    if status is False:
        return "False"
    if status in ("True", "False", "Unknown"):
        return status  # type: ignore[return-value]
    raise ValueError(f"condition status must be True, False or Unknown, not {status!r}")


def get_condition(
    conditions: Iterable[Mapping[str, Any]] | None, type_: str
) -> ConditionDict | None:
    """A copy of the condition of ``type_``, or None."""
    for condition in conditions or ():
        if condition.get("type") == type_:
            return dict(condition)
    return None


def is_true(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> bool:
    condition = get_condition(conditions, type_)
    return condition is not None and condition.get("status") == "True"


def set_condition(
    conditions: Iterable[Mapping[str, Any]] | None,
    type_: str,
    status: bool | str,
    reason: str,
    message: str = "",
    *,
    observed_generation: int | None = None,
    now: datetime | None = None,
) -> list[ConditionDict]:
    """A new conditions list with condition ``type_`` set.

    ``lastTransitionTime`` is kept when the condition exists with the same ``status`` and set to
    ``now`` otherwise; ``reason``, ``message`` and ``observedGeneration`` are always updated.
    ``reason`` must be CamelCase (metav1 pattern); ``message`` is truncated to 32768 characters.
    """
    value = _status_value(status)
    if not _REASON.match(reason):
        raise ValueError(f"condition reason must be CamelCase, not {reason!r}")
    if observed_generation is not None and observed_generation < 0:
        raise ValueError("observed_generation must be >= 0")
    result: list[ConditionDict] = []
    found = False
    for existing in conditions or ():
        if existing.get("type") != type_:
            result.append(dict(existing))
            continue
        if found:  # a duplicate type in stored status: drop it (list-map keys are unique)
            continue
        found = True
        result.append(_build(type_, value, reason, message, observed_generation, now, existing))
    if not found:
        result.append(_build(type_, value, reason, message, observed_generation, now, None))
    return result


def _build(
    type_: str,
    value: StatusValue,
    reason: str,
    message: str,
    observed_generation: int | None,
    now: datetime | None,
    existing: Mapping[str, Any] | None,
) -> ConditionDict:
    keep_time = (
        existing is not None
        and existing.get("status") == value
        and isinstance(existing.get("lastTransitionTime"), str)
    )
    condition: ConditionDict = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message[:_MAX_MESSAGE],
        "lastTransitionTime": (
            existing["lastTransitionTime"] if keep_time and existing else rfc3339(now)
        ),
    }
    if observed_generation is not None:
        condition["observedGeneration"] = observed_generation
    elif existing is not None and "observedGeneration" in existing:
        condition["observedGeneration"] = existing["observedGeneration"]
    return condition


def remove_condition(
    conditions: Iterable[Mapping[str, Any]] | None, type_: str
) -> list[ConditionDict]:
    """A new conditions list without ``type_``."""
    return [dict(c) for c in conditions or () if c.get("type") != type_]


def set_kstatus(
    conditions: Iterable[Mapping[str, Any]] | None,
    *,
    ready: bool | str,
    reason: str,
    message: str = "",
    reconciling: bool = False,
    stalled: bool = False,
    observed_generation: int | None = None,
    now: datetime | None = None,
) -> list[ConditionDict]:
    """Ready plus the abnormal-true Reconciling/Stalled pair, kstatus style.

    Reconciling / Stalled are set True (with ``reason``/``message``) when asked for and removed
    otherwise; Ready is always present.
    """
    result = set_condition(
        conditions,
        READY,
        ready,
        reason,
        message,
        observed_generation=observed_generation,
        now=now,
    )
    for type_, wanted in ((RECONCILING, reconciling), (STALLED, stalled)):
        if wanted:
            result = set_condition(
                result,
                type_,
                True,
                reason,
                message,
                observed_generation=observed_generation,
                now=now,
            )
        else:
            result = remove_condition(result, type_)
    return result


KStatus = Literal["InProgress", "Failed", "Current"]


def kstatus(generation: int | None, status: Mapping[str, Any] | None) -> KStatus:
    """The kstatus result of an object from ``metadata.generation`` and its ``status``.

    InProgress while ``status.observedGeneration`` lags ``generation`` or Reconciling is True or
    Ready is not True; Failed when Stalled is True; Current when Ready is True.
    """
    status = status or {}
    conditions = status.get("conditions") or []
    observed = status.get("observedGeneration")
    if generation is not None and observed != generation:
        return "InProgress"
    if is_true(conditions, STALLED):
        return "Failed"
    if is_true(conditions, RECONCILING):
        return "InProgress"
    if is_true(conditions, READY):
        return "Current"
    return "InProgress"
