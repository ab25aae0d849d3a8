"""Where a batch's files and progress live in the object store, and how progress is read back
(pure).

Under the batch's ``spec.output.uri`` (``s3://B/P/``):

* ``P/output.jsonl`` and ``P/errors.jsonl`` — the results, written once at the end;
* ``P/.state/<uid>/manifest.json`` — written once the input was read and checked (its size and
  ETag, the number of lines);
* ``P/.state/<uid>/parts/<run>-<seq>.jsonl`` — committed outcomes, one JSON record a line
  (``{"i": line index, "ok": bool, "line": output or error line, ...}``), each part written in one
  PUT (atomic), never rewritten;
* ``P/.state/<uid>/final.json`` — the terminal phase and counts, written last.

A restarted dispatcher reads the manifest and every part: a line index that has a record is
answered and never sent again; when two parts hold the same index (two dispatchers racing on one
batch) the first part in key order wins, so the output still holds each line once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Layout", "decode_records", "encode_records", "merge_records"]


@dataclass(frozen=True)
class Layout:
    bucket: str
    prefix: str  # no leading or trailing slash; may be empty
    uid: str

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    @property
    def output_key(self) -> str:
        return self._key("output.jsonl")

    @property
    def errors_key(self) -> str:
        return self._key("errors.jsonl")

    @property
    def state_prefix(self) -> str:
        return self._key(f".state/{self.uid}/")

    @property
    def manifest_key(self) -> str:
        return self.state_prefix + "manifest.json"

    @property
    def final_key(self) -> str:
        return self.state_prefix + "final.json"

    @property
    def parts_prefix(self) -> str:
        return self.state_prefix + "parts/"

    def part_key(self, run: str, seq: int) -> str:
        return f"{self.parts_prefix}{run}-{seq:08d}.jsonl"

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def encode_records(records: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)


def decode_records(data: bytes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for raw in data.split(b"\n"):
        if raw.strip():
            record = json.loads(raw)
            if isinstance(record, dict) and isinstance(record.get("i"), int):
                out.append(record)
    return out


def merge_records(parts: Iterable[bytes]) -> tuple[dict[int, dict[str, Any]], int]:
    """First record per line index over ``parts`` (in order) and how many were repeats."""
    answered: dict[int, dict[str, Any]] = {}
    repeats = 0
    for data in parts:
        for record in decode_records(data):
            if record["i"] in answered:
                repeats += 1
            else:
                answered[record["i"]] = record
    return answered, repeats
