"""Where the agent reads the car's signals from. Pluggable: anything with ``read()``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from tokenfleet.agent.signals import Sample, signals_from_mapping
from tokenfleet.telemetry.vehicle import OBSERVED_AT, parse_time

__all__ = ["JsonFileSource", "SignalSource", "SourceError", "make_source"]


class SourceError(Exception):
    """The source could not be read at all (file missing, not JSON, not an object)."""


@runtime_checkable
class SignalSource(Protocol):
    """A source of vehicle signals (a gateway file, a KUKSA databroker, CAN, ...)."""

    def read(self) -> Sample:
        """The current sample. Raises :class:`SourceError` when nothing can be read."""
        ...


class JsonFileSource:
    """A JSON object file rewritten by the car's gateway, keyed by contract names
    (``{"soc-percent": 71.5, "plugged-in": true, ...}``) or VSS paths.

    The sample's time is the document's ``observed-at`` (RFC 3339) if valid, else the file's
    modification time: a gateway must rewrite the file at least once per heartbeat, or the car
    (correctly) goes stale."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> Sample:
        try:
            mtime = self.path.stat().st_mtime
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise SourceError(f"{self.path}: {error}") from error
        if not isinstance(doc, dict):
            raise SourceError(f"{self.path}: expected a JSON object")
        signals, problems = signals_from_mapping(doc)
        stamp = doc.get(OBSERVED_AT)
        observed = parse_time(stamp) if isinstance(stamp, str) else None
        if observed is None:
            observed = datetime.fromtimestamp(mtime, UTC)
        return Sample(signals, observed, problems)


def make_source(spec: str) -> SignalSource:
    """``json:/path`` (or a bare path) -> :class:`JsonFileSource`."""
    scheme, sep, rest = spec.partition(":")
    if sep and scheme == "json":
        return JsonFileSource(rest)
    if not sep or "/" in scheme:
        return JsonFileSource(spec)
    raise ValueError(f"unknown signal source {spec!r} (supported: json:/path)")
