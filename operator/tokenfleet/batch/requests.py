"""The OpenAI batch input format (pure): one request a JSONL line, and the output/error lines.

A line is ``{"custom_id": str, "method": "POST", "url": "/v1/chat/completions" |
"/v1/completions", "body": {...}}``. A malformed line (not JSON, a missing or repeated
``custom_id``, an unknown url, a body over the size limit or refused by the OpenAI request
rules) becomes a :class:`LineError` with a reason; it goes to the error file and does not stop
the batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tokenfleet.gateway.api import ApiError, GenerateRequest, parse_chat, parse_completion

__all__ = [
    "CHAT_URL",
    "COMPLETIONS_URL",
    "MAX_BODY_BYTES",
    "BatchRequest",
    "LineError",
    "error_line",
    "output_line",
    "parse_input",
]

CHAT_URL = "/v1/chat/completions"
COMPLETIONS_URL = "/v1/completions"
MAX_BODY_BYTES = 1 << 20
MAX_CUSTOM_ID = 512


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One valid input line."""

    index: int  # 0-based line number
    custom_id: str
    url: str
    request: GenerateRequest

    @property
    def expected_tokens(self) -> int:
        """Tokens a replica generates for it (the cost the dispatcher plans with)."""
        return self.request.max_tokens


@dataclass(frozen=True, slots=True)
class LineError:
    """One input line that cannot be served, and why."""

    index: int
    custom_id: str | None
    code: str
    message: str


def _parse_line(index: int, raw: bytes, seen: set[str], max_body_bytes: int) -> Any:
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return LineError(index, None, "invalid_json", f"line {index + 1}: not JSON: {exc}")
    if not isinstance(obj, dict):
        return LineError(index, None, "invalid_json", f"line {index + 1}: not a JSON object")
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
        return LineError(
            index,
            None,
            "missing_custom_id",
            f"line {index + 1}: custom_id: required, a string of 1..{MAX_CUSTOM_ID} characters",
        )
    if custom_id in seen:
        return LineError(
            index,
            custom_id,
            "duplicate_custom_id",
            f"line {index + 1}: custom_id {custom_id!r} repeats an earlier line",
        )
    seen.add(custom_id)
    method = obj.get("method", "POST")
    if method != "POST":
        return LineError(
            index, custom_id, "invalid_method", f"line {index + 1}: method: must be POST"
        )
    url = obj.get("url")
    if url not in (CHAT_URL, COMPLETIONS_URL):
        return LineError(
            index,
            custom_id,
            "invalid_url",
            f"line {index + 1}: url: {url!r} is not {CHAT_URL} or {COMPLETIONS_URL}",
        )
    body = obj.get("body")
    if not isinstance(body, dict):
        return LineError(index, custom_id, "invalid_body", f"line {index + 1}: body: required")
    size = len(json.dumps(body, separators=(",", ":")).encode())
    if size > max_body_bytes:
        return LineError(
            index,
            custom_id,
            "body_too_large",
            f"line {index + 1}: body: {size} bytes, over the limit of {max_body_bytes}",
        )
    body = {**body, "model": body.get("model") or "batch", "stream": False}
    try:
        parsed = parse_chat(body) if url == CHAT_URL else parse_completion(body)
    except ApiError as exc:
        return LineError(index, custom_id, exc.code or "invalid_body", f"body: {exc.message}")
    return BatchRequest(index, custom_id, str(url), parsed)


def parse_input(
    data: bytes, *, max_body_bytes: int = MAX_BODY_BYTES
) -> tuple[list[BatchRequest], list[LineError], int]:
    """Split a JSONL file into requests and line errors; returns (requests, errors, lines).

    Blank lines are skipped and not counted: a request's index and the line number in its
    error message (1-based) count non-blank lines.
    """
    requests: list[BatchRequest] = []
    errors: list[LineError] = []
    seen: set[str] = set()
    index = 0
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        parsed = _parse_line(index, raw, seen, max_body_bytes)
        (requests if isinstance(parsed, BatchRequest) else errors).append(parsed)
        index += 1
    return requests, errors, index


def output_line(
    batch_id: str, req: BatchRequest, body: dict[str, Any], request_id: str
) -> dict[str, Any]:
    """A line of the output file (OpenAI batch output format)."""
    return {
        "id": f"{batch_id}-{req.index}",
        "custom_id": req.custom_id,
        "response": {"status_code": 200, "request_id": request_id, "body": body},
        "error": None,
    }


def error_line(batch_id: str, index: int, custom_id: str | None, code: str, message: str) -> Any:
    """A line of the error file (OpenAI batch output format, ``error`` set)."""
    return {
        "id": f"{batch_id}-{index}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }
