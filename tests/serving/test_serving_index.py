"""Reading Triton's repository index answer (pure: the real servers' side is in
``test_serving_runtime.py``)."""

from __future__ import annotations

import pytest

from tokenfleet.serving import RuntimeUnavailable
from tokenfleet.serving.runtime import _index_rows


def test_the_rows_of_an_index_are_read_as_they_come() -> None:
    body = b'[{"name":"a","version":"1","state":"READY"},{"name":"b"}]'
    assert _index_rows("127.0.0.1:1", 200, body) == [
        {"name": "a", "version": "1", "state": "READY"},
        {"name": "b"},
    ]
    assert _index_rows("127.0.0.1:1", 200, b"[]") == []


def test_an_error_answer_carries_tritons_message_and_the_status() -> None:
    with pytest.raises(RuntimeUnavailable, match=r"HTTP 400: failed to poll the repository"):
        _index_rows("127.0.0.1:1", 400, b'{"error":"failed to poll the repository"}')
    with pytest.raises(RuntimeUnavailable, match=r"HTTP 503: upstream gone"):
        _index_rows("127.0.0.1:1", 503, b"upstream gone")


@pytest.mark.parametrize("body", [b"", b"not json", b'{"name":"a"}', b'["a"]'])
def test_a_body_that_is_not_a_list_of_rows_is_unparsable(body: bytes) -> None:
    with pytest.raises(RuntimeUnavailable, match="unparsable repository index"):
        _index_rows("127.0.0.1:1", 200, body)
