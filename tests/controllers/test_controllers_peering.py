"""HA peering priorities: distinct per replica, stable per pod name, an explicit one wins."""

from __future__ import annotations

import pytest

from tokenfleet.cli import _build_parser
from tokenfleet.controllers.main import PRIORITY_SPAN, peer_identity, peering_priority


def test_derived_priority_is_stable_per_identity_and_in_range() -> None:
    a = peering_priority(None, "tf-tokenfleet-7d9f8c6b5-abcde")
    assert a == peering_priority(None, "tf-tokenfleet-7d9f8c6b5-abcde")
    assert 1 <= a <= PRIORITY_SPAN


def test_replicas_of_one_deployment_get_distinct_priorities() -> None:
    # kopf pauses every replica sharing the top priority: pod names must map apart.
    names = [f"tf-tokenfleet-7d9f8c6b5-{i:05d}" for i in range(2000)]
    priorities = {peering_priority(None, n) for n in names}
    assert len(priorities) == len(names)


def test_explicit_priority_wins() -> None:
    assert peering_priority(0, "any") == 0
    assert peering_priority(-5, "any") == -5


def test_identity_is_pod_id_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_ID", "tf-tokenfleet-abc")
    assert peer_identity() == "tf-tokenfleet-abc"
    monkeypatch.delenv("POD_ID")
    assert "/" in peer_identity()  # host/pid for a local run


def test_run_priority_defaults_to_derived() -> None:
    args = _build_parser().parse_args(["run", "--peering", "x"])
    assert args.priority is None
    assert _build_parser().parse_args(["run", "--priority", "7"]).priority == 7
