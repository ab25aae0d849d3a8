"""OpenAI-compatible request parsing, errors and response shapes (pure).

Errors are OpenAI-shaped: ``{"error": {"message", "type", "param", "code"}}``; a bad field is
named in ``param`` and in the message.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "MAX_TOKENS_LIMIT",
    "ApiError",
    "ChunkEncoder",
    "GenerateRequest",
    "chat_chunk",
    "chat_response",
    "completion_chunk",
    "completion_response",
    "parse_chat",
    "parse_completion",
    "split_model",
]

DEFAULT_MAX_TOKENS = 16
MAX_TOKENS_LIMIT = 512


class ApiError(Exception):
    """An error answered to the caller with ``status`` and OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad(param: str, message: str) -> ApiError:
    return ApiError(400, f"{param}: {message}", param=param, code="invalid_value")


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """One parsed chat or completion request."""

    kind: str  # "chat" or "completion"
    model: str
    prompt: str
    max_tokens: int
    temperature: float
    seed: int
    stream: bool
    include_usage: bool


def split_model(model: str) -> tuple[str | None, str]:
    """``"name"`` or ``"namespace/name"`` -> (namespace or None, name)."""
    if "/" in model:
        namespace, _, name = model.partition("/")
        return namespace, name
    return None, model


def _common(body: Mapping[str, Any]) -> dict[str, Any]:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ApiError(400, "model: required, a job name", param="model", code="missing_model")
    max_tokens: Any = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise bad("max_tokens", f"must be an integer, got {max_tokens!r}")
    if not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise bad("max_tokens", f"must be in 1..{MAX_TOKENS_LIMIT}, got {max_tokens}")
    temperature: Any = body.get("temperature")
    if temperature is None:
        temperature = 1.0
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise bad("temperature", f"must be a number, got {temperature!r}")
    if not math.isfinite(temperature) or not 0.0 <= temperature <= 2.0:
        raise bad("temperature", f"must be in 0..2, got {temperature}")
    seed: Any = body.get("seed")
    if seed is None:
        seed = 0
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise bad("seed", f"must be a non-negative integer, got {seed!r}")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad("stream", f"must be a boolean, got {stream!r}")
    options = body.get("stream_options") or {}
    if not isinstance(options, Mapping):
        raise bad("stream_options", "must be an object")
    n = body.get("n", 1)
    if n not in (None, 1):
        raise bad("n", f"only n=1 is supported, got {n!r}")
    return {
        "model": model.strip(),
        "max_tokens": max_tokens,
        "temperature": float(temperature),
        "seed": seed,
        "stream": stream,
        "include_usage": bool(options.get("include_usage", False)),
    }


def parse_chat(body: Any) -> GenerateRequest:
    """A ``/v1/chat/completions`` body; the prompt is the messages as ``role: content`` lines."""
    if not isinstance(body, Mapping):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    common = _common(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("messages", "required, a non-empty list of {role, content}")
    lines = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise bad(f"messages[{i}]", "must be an object with role and content")
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "user", "assistant", "developer", "tool"):
            raise bad(f"messages[{i}].role", f"unknown role {role!r}")
        if isinstance(content, list):
            parts = [p.get("text") for p in content if isinstance(p, Mapping)]
            if not all(isinstance(p, str) for p in parts):
                raise bad(f"messages[{i}].content", "only text parts are supported")
            content = " ".join(str(p) for p in parts)
        if not isinstance(content, str):
            raise bad(f"messages[{i}].content", "must be a string")
        lines.append(f"{role}: {content}")
    return GenerateRequest(kind="chat", prompt="\n".join(lines), **common)


def parse_completion(body: Any) -> GenerateRequest:
    """A ``/v1/completions`` body (``prompt``: a string or a list of one string)."""
    if not isinstance(body, Mapping):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    common = _common(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise bad("prompt", "required, a string")
    return GenerateRequest(kind="completion", prompt=prompt, **common)


def new_id(kind: str) -> str:
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    return f"{prefix}-{os.urandom(12).hex()}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_response(
    rid: str, model: str, text: str, finish: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def completion_response(
    rid: str, model: str, text: str, finish: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chat_chunk(
    rid: str,
    model: str,
    text: str | None,
    finish: str | None,
    *,
    first: bool = False,
    usage_counts: tuple[int, int] | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; ``usage_counts`` makes the usage-only final chunk."""
    chunk: dict[str, Any] = {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": int(time.time()) if created is None else created,
        "model": model,
    }
    if usage_counts is not None:
        chunk["choices"] = []
        chunk["usage"] = usage(*usage_counts)
        return chunk
    delta: dict[str, Any] = {}
    if first:
        delta["role"] = "assistant"
    if text is not None:
        delta["content"] = text
    chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
    return chunk


def completion_chunk(
    rid: str,
    model: str,
    text: str,
    finish: str | None,
    *,
    usage_counts: tuple[int, int] | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
    }
    if usage_counts is not None:
        chunk["choices"] = []
        chunk["usage"] = usage(*usage_counts)
        return chunk
    chunk["choices"] = [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]
    return chunk


def sse(obj: Any) -> bytes:
    """One server-sent event carrying ``obj`` as compact JSON."""
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


_TAIL = b',"logprobs":null}]}\n\n'


class ChunkEncoder:
    """The SSE events of one streamed response, byte for byte ``sse(chat_chunk(...))`` or
    ``sse(completion_chunk(...))``, but with the part every chunk shares (id, object, created,
    model) encoded once per response: per token only the text and finish reason are encoded."""

    __slots__ = ("_chat", "_head", "created", "model", "rid")

    def __init__(self, kind: str, rid: str, model: str, created: int | None = None) -> None:
        self._chat = kind == "chat"
        self.rid = rid
        self.model = model
        self.created = int(time.time()) if created is None else created
        head = {
            "id": rid,
            "object": "chat.completion.chunk" if self._chat else "text_completion",
            "created": self.created,
            "model": model,
        }
        # '{"id":...,"model":"m"}' -> 'data: {"id":...,"model":"m","choices":[{"index":0,'
        self._head = b"data: " + json.dumps(head, separators=(",", ":")).encode()[:-1]
        self._head += b',"choices":[{"index":0,'

    def chunk(self, text: str, finish: str | None, *, first: bool = False) -> bytes:
        """One token chunk (``first``: the chat delta names the assistant's role)."""
        encoded = json.dumps(text).encode()
        end = b',"finish_reason":' + (b"null" if finish is None else json.dumps(finish).encode())
        if self._chat:
            delta = b'"delta":{"role":"assistant","content":' if first else b'"delta":{"content":'
            return self._head + delta + encoded + b"}" + end + _TAIL
        return self._head + b'"text":' + encoded + end + _TAIL

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        """The usage-only final chunk."""
        maker = chat_chunk if self._chat else completion_chunk
        counts = (prompt_tokens, completion_tokens)
        return sse(maker(self.rid, self.model, "", None, usage_counts=counts, created=self.created))
