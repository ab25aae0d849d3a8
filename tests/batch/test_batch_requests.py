"""The OpenAI batch input format: valid lines become requests, malformed lines errors."""

from __future__ import annotations

import json

from tokenfleet.batch.requests import parse_input


def line(custom_id: str, url: str = "/v1/chat/completions", **body: object) -> bytes:
    payload = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **body}
    return json.dumps(
        {"custom_id": custom_id, "method": "POST", "url": url, "body": payload}
    ).encode()


def test_valid_and_malformed_lines() -> None:
    data = b"\n".join(
        [
            line("a"),
            b"{not json",
            line("b", url="/v1/embeddings"),
            line("c", padding="x" * 2000),
            line("a"),
            b"",
            json.dumps(
                {"custom_id": "d", "url": "/v1/completions", "body": {"prompt": "x"}}
            ).encode(),
            line("e", max_tokens=0),
            b"[1, 2]",
        ]
    )
    requests, errors, total = parse_input(data, max_body_bytes=1000)
    assert total == 8  # the blank line is not a request
    assert [(r.index, r.custom_id, r.expected_tokens) for r in requests] == [
        (0, "a", 4),
        (5, "d", 16),
    ]
    reasons = {(e.index, e.custom_id): e.code for e in errors}
    assert reasons == {
        (1, None): "invalid_json",
        (2, "b"): "invalid_url",
        (3, "c"): "body_too_large",
        (4, "a"): "duplicate_custom_id",
        (6, "e"): "invalid_value",
        (7, None): "invalid_json",
    }
    too_large = next(e for e in errors if e.code == "body_too_large")
    assert "over the limit of 1000" in too_large.message
    bad_tokens = next(e for e in errors if e.custom_id == "e")
    assert "max_tokens" in bad_tokens.message
