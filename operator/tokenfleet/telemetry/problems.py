"""Telemetry problems: why a field of a reading counts as unknown.

Every parser in :mod:`tokenfleet.telemetry` returns values that are either valid or ``None``
(unknown) together with a tuple of :class:`TelemetryProblem` naming the field, the raw value
as received and the :class:`ProblemKind`. Nothing here raises on bad input.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["ProblemKind", "TelemetryProblem", "check_range", "parse_decimal", "raw_text"]


class ProblemKind(StrEnum):
    """Why a telemetry field was rejected (CamelCase: also used as a metric label value)."""

    MISSING = "Missing"
    """The key is absent (or empty)."""
    UNPARSABLE = "Unparsable"
    """The value is not a decimal number / boolean / RFC 3339 time."""
    OUT_OF_RANGE = "OutOfRange"
    """The value parsed but lies outside the physical range (or is a time in the future)."""
    NON_FINITE = "NonFinite"
    """NaN or ±infinity."""
    STALE = "Stale"
    """The reading is older than the staleness limit (or its age is unknown)."""


@dataclass(frozen=True, slots=True)
class TelemetryProblem:
    """One rejected field: ``field`` is the contract name (annotation suffix or Redfish property),
    ``raw`` the value as received (``None`` when missing; ``repr`` of non-strings, truncated)."""

    field: str
    raw: str | None
    kind: ProblemKind

    def describe(self) -> str:
        """Human-readable one-liner for Events and logs."""
        if self.raw is None:
            return f"{self.field}: {self.kind.value}"
        return f"{self.field}={self.raw!r}: {self.kind.value}"


_RAW_MAX = 64


def raw_text(value: object) -> str | None:
    """The raw value as a bounded string for a problem record (``None`` stays ``None``)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _RAW_MAX else text[: _RAW_MAX - 1] + "…"


_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.ASCII | re.IGNORECASE)


def parse_decimal(field: str, value: object) -> tuple[float | None, TelemetryProblem | None]:
    """Parse a plain decimal (string or JSON number) into a finite float.

    A string must be an ASCII decimal (``-1.5``, ``50``, ``1e3``; surrounding spaces allowed):
    Unicode digits such as full-width fifty (U+FF15 U+FF10) and ``1_0`` are ``Unparsable``.

    Booleans are rejected (``True`` is not ``1.0`` here). Returns ``(value, None)`` or
    ``(None, problem)``.
    """
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None, TelemetryProblem(field, raw_text(value), ProblemKind.MISSING)
    if isinstance(value, bool):
        return None, TelemetryProblem(field, raw_text(value), ProblemKind.UNPARSABLE)
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        # only ASCII decimals: float() also takes "1_0", "\uff15\uff10" (full-width) and
        # other Unicode digits, which a plain decimal string never contains
        text = value.strip(" \t\r\n")
        if _NON_FINITE.fullmatch(text):
            return None, TelemetryProblem(field, raw_text(value), ProblemKind.NON_FINITE)
        if not _DECIMAL.fullmatch(text):
            return None, TelemetryProblem(field, raw_text(value), ProblemKind.UNPARSABLE)
        number = float(text)
    else:
        return None, TelemetryProblem(field, raw_text(value), ProblemKind.UNPARSABLE)
    if not math.isfinite(number):
        return None, TelemetryProblem(field, raw_text(value), ProblemKind.NON_FINITE)
    return number, None


def check_range(
    field: str, value: object, low: float, high: float
) -> tuple[float | None, TelemetryProblem | None]:
    """:func:`parse_decimal`, then require ``low <= value <= high`` (else ``OutOfRange``)."""
    number, problem = parse_decimal(field, value)
    if number is None:
        return None, problem
    if not low <= number <= high:
        return None, TelemetryProblem(field, raw_text(value), ProblemKind.OUT_OF_RANGE)
    return number, None
