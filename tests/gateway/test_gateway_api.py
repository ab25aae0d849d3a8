"""OpenAI request parsing: defaults, and bad input naming its field (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from tokenfleet.gateway.api import ApiError, parse_chat, parse_completion, split_model


def test_chat_prompt_and_defaults() -> None:
    req = parse_chat(
        {
            "model": "chat",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi there"}]},
            ],
        }
    )
    assert req.prompt == "system: be brief\nuser: hi there"
    assert (req.max_tokens, req.temperature, req.seed, req.stream) == (16, 1.0, 0, False)
    req = parse_completion(
        {"model": "ns/x", "prompt": ["p"], "max_completion_tokens": 3, "stream": True}
    )
    assert (req.prompt, req.max_tokens, req.stream) == ("p", 3, True)
    assert split_model("ns/x") == ("ns", "x") and split_model("x") == (None, "x")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x"}, "model"),
        ({"model": "m"}, "prompt"),
        ({"model": "m", "prompt": 3}, "prompt"),
        ({"model": "m", "prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "prompt": "x", "max_tokens": "9"}, "max_tokens"),
        ({"model": "m", "prompt": "x", "temperature": 3}, "temperature"),
        ({"model": "m", "prompt": "x", "temperature": True}, "temperature"),
        ({"model": "m", "prompt": "x", "seed": -1}, "seed"),
        ({"model": "m", "prompt": "x", "stream": "yes"}, "stream"),
        ({"model": "m", "prompt": "x", "n": 2}, "n"),
    ],
)
def test_bad_completion_names_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_completion(body)
    assert info.value.status == 400
    assert info.value.param == param
    assert param in info.value.message
    assert set(info.value.body()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (None, "messages"),
        ([], "messages"),
        (["x"], "messages[0]"),
        ([{"role": "wizard", "content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": 5}], "messages[0].content"),
    ],
)
def test_bad_chat_names_the_field(messages: Any, param: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_chat({"model": "m", "messages": messages})
    assert info.value.param == param
    with pytest.raises(ApiError):
        parse_chat([1, 2])
