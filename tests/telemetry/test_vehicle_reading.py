"""Vehicle annotation contract: every bad value is unknown (None) with a named problem."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenfleet.telemetry.problems import ProblemKind, TelemetryProblem, parse_decimal
from tokenfleet.telemetry.vehicle import (
    ANNOTATION_PREFIX,
    ATTESTED_LABEL,
    POOL_LABEL,
    REGION_LABEL,
    SIGNAL_ANNOTATIONS,
    VehicleReading,
    format_time,
    parse_time,
    parse_vehicle_reading,
)

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
LABELS = {
    "tokenfleet.io/role": "vehicle",
    POOL_LABEL: "pool-a",
    REGION_LABEL: "eu-west",
    ATTESTED_LABEL: "true",
}


def good(**overrides: str | None) -> dict[str, str]:
    values: dict[str, str | None] = {
        "soc-percent": "72.5",
        "plugged-in": "true",
        "charger-power-kw": "11",
        "battery-temp-c": "28.0",
        "compute-temp-c": "55",
        "departure-time": "2026-11-25T17:30:00Z",
        "target-soc-percent": "80",
        "bandwidth-mbps": "250",
        "observed-at": "2026-11-25T11:59:30Z",
    }
    values.update(overrides)
    return {ANNOTATION_PREFIX + k: v for k, v in values.items() if v is not None}


def kinds(reading: VehicleReading) -> dict[str, ProblemKind]:
    return {p.field: p.kind for p in reading.problems}


def test_valid_reading_parses_every_field() -> None:
    r = parse_vehicle_reading(LABELS, good())
    assert r.problems == ()
    assert r.soc_percent == 72.5
    assert r.plugged_in is True
    assert r.charger_power_kw == 11.0
    assert r.battery_temp_c == 28.0
    assert r.compute_temp_c == 55.0
    assert r.departure_time == datetime(2026, 11, 25, 17, 30, tzinfo=UTC)
    assert r.target_soc_percent == 80.0
    assert r.bandwidth_mbps == 250.0
    assert r.observed_at == datetime(2026, 11, 25, 11, 59, 30, tzinfo=UTC)
    assert (r.pool, r.region, r.attested) == ("pool-a", "eu-west", True)
    assert r.at(NOW, 60) is r  # fresh: unchanged


@pytest.mark.parametrize(
    ("field", "raw", "kind"),
    [
        ("soc-percent", "NaN", ProblemKind.NON_FINITE),
        ("soc-percent", "nan", ProblemKind.NON_FINITE),
        ("soc-percent", "-5", ProblemKind.OUT_OF_RANGE),
        ("soc-percent", "100.01", ProblemKind.OUT_OF_RANGE),
        ("soc-percent", "72%", ProblemKind.UNPARSABLE),
        ("soc-percent", "", ProblemKind.MISSING),
        ("soc-percent", "   ", ProblemKind.MISSING),
        ("soc-percent", "1_0", ProblemKind.UNPARSABLE),
        ("battery-temp-c", "1e9", ProblemKind.OUT_OF_RANGE),
        ("battery-temp-c", "-41", ProblemKind.OUT_OF_RANGE),
        ("battery-temp-c", "inf", ProblemKind.NON_FINITE),
        ("compute-temp-c", "-Infinity", ProblemKind.NON_FINITE),
        ("compute-temp-c", "hot", ProblemKind.UNPARSABLE),
        ("charger-power-kw", "400.5", ProblemKind.OUT_OF_RANGE),
        ("charger-power-kw", "-0.1", ProblemKind.OUT_OF_RANGE),
        ("bandwidth-mbps", "100001", ProblemKind.OUT_OF_RANGE),
        ("bandwidth-mbps", "0x10", ProblemKind.UNPARSABLE),
        ("target-soc-percent", "101", ProblemKind.OUT_OF_RANGE),
        ("plugged-in", "yes", ProblemKind.UNPARSABLE),
        ("plugged-in", "1", ProblemKind.UNPARSABLE),
        ("departure-time", "tomorrow", ProblemKind.UNPARSABLE),
        ("departure-time", "2026-11-25T17:30:00", ProblemKind.UNPARSABLE),  # no offset
        ("departure-time", "2026-11-25", ProblemKind.UNPARSABLE),
        ("observed-at", "2026-13-01T00:00:00Z", ProblemKind.UNPARSABLE),
        ("observed-at", "\x00\xff garbage", ProblemKind.UNPARSABLE),
    ],
)
def test_bad_value_is_unknown_with_named_problem(field: str, raw: str, kind: ProblemKind) -> None:
    r = parse_vehicle_reading(LABELS, good(**{field: raw}))
    attr = next(a for a, s in SIGNAL_ANNOTATIONS.items() if s == field)
    assert getattr(r, attr) is None
    expected_raw = None if kind is ProblemKind.MISSING and not raw.strip() else raw
    if kind is ProblemKind.MISSING:
        assert kinds(r) == {field: kind}
    else:
        assert r.problems == (TelemetryProblem(field, expected_raw, kind),)
    # every other field is still good
    others = [a for a in SIGNAL_ANNOTATIONS if a != attr]
    assert all(getattr(r, a) is not None for a in others)


@pytest.mark.parametrize("field", sorted(SIGNAL_ANNOTATIONS.values()))
def test_missing_key(field: str) -> None:
    r = parse_vehicle_reading(LABELS, good(**{field: None}))
    assert r.problems == (TelemetryProblem(field, None, ProblemKind.MISSING),)


def test_boundaries_are_inclusive() -> None:
    r = parse_vehicle_reading(
        LABELS,
        good(
            **{
                "soc-percent": "0",
                "target-soc-percent": "100",
                "battery-temp-c": "-40",
                "compute-temp-c": "150",
                "charger-power-kw": "400",
                "bandwidth-mbps": "100000",
            }
        ),
    )
    assert r.problems == ()
    assert (r.soc_percent, r.target_soc_percent) == (0.0, 100.0)
    assert (r.battery_temp_c, r.compute_temp_c) == (-40.0, 150.0)


def test_no_annotations_at_all() -> None:
    r = parse_vehicle_reading(None, None)
    assert len(r.problems) == len(SIGNAL_ANNOTATIONS)
    assert all(p.kind is ProblemKind.MISSING for p in r.problems)
    assert (r.pool, r.region, r.attested) == (None, None, False)
    assert r.at(NOW, 300).stale


def test_trust_comes_only_from_node_restriction_labels() -> None:
    # a node claiming region/attestation through annotations or plain labels gets nothing
    labels = {"tokenfleet.io/region": "eu-west", "tokenfleet.io/attested": "true"}
    r = parse_vehicle_reading(labels, good() | {"telemetry.tokenfleet.io/attested": "true"})
    assert (r.region, r.attested) == (None, False)
    r = parse_vehicle_reading(LABELS | {ATTESTED_LABEL: "True "}, good())
    assert r.attested is True
    r = parse_vehicle_reading(LABELS | {ATTESTED_LABEL: "yes"}, good())
    assert r.attested is False


def test_stale_reading_is_unknown_never_good() -> None:
    r = parse_vehicle_reading(LABELS, good(**{"observed-at": "2026-11-25T11:50:00Z"}))
    assert r.at(NOW, 600) is r
    stale = r.at(NOW, 599)
    assert stale.stale
    assert stale.soc_percent is None and stale.plugged_in is None and stale.departure_time is None
    assert (stale.pool, stale.region, stale.attested) == ("pool-a", "eu-west", True)
    assert stale.observed_at == r.observed_at
    assert stale.problems[-1] == TelemetryProblem(
        "observed-at", "2026-11-25T11:50:00Z", ProblemKind.STALE
    )
    assert stale.at(NOW, 599) == stale  # idempotent
    assert not r.is_fresh(NOW, 599) and r.is_fresh(NOW, 600)


def test_unknown_observed_at_is_stale() -> None:
    r = parse_vehicle_reading(LABELS, good(**{"observed-at": "garbage"}))
    assert r.soc_percent == 72.5
    judged = r.at(NOW, 86400)
    assert judged.stale and judged.soc_percent is None
    assert TelemetryProblem("observed-at", None, ProblemKind.STALE) in judged.problems


def test_future_timestamp_beyond_skew_is_rejected() -> None:
    near = parse_vehicle_reading(LABELS, good(**{"observed-at": "2026-11-25T12:00:20Z"}))
    assert not near.at(NOW, 60).stale  # 20 s of clock skew is tolerated
    far = parse_vehicle_reading(LABELS, good(**{"observed-at": "2027-01-01T00:00:00Z"}))
    judged = far.at(NOW, 60)
    assert judged.stale and judged.soc_percent is None
    assert judged.problems[-1].kind is ProblemKind.OUT_OF_RANGE
    assert judged.problems[-1].field == "observed-at"


def test_offsets_are_normalised_to_utc() -> None:
    r = parse_vehicle_reading(LABELS, good(**{"departure-time": "2026-11-25T18:30:00+01:00"}))
    assert r.departure_time == datetime(2026, 11, 25, 17, 30, tzinfo=UTC)
    assert format_time(datetime(2026, 11, 25, 18, 30, 5, 999, tzinfo=UTC)) == "2026-11-25T18:30:05Z"
    with pytest.raises(ValueError):
        format_time(datetime(2026, 11, 25))


def test_raw_value_is_truncated() -> None:
    r = parse_vehicle_reading(LABELS, good(**{"soc-percent": "x" * 5000}))
    (problem,) = r.problems
    assert problem.raw is not None and len(problem.raw) <= 64
    assert "soc-percent" in problem.describe()


# --- property tests -----------------------------------------------------------------------


@given(st.text(max_size=40))
def test_parse_never_raises_and_values_are_valid(text: str) -> None:
    annotations = {ANNOTATION_PREFIX + s: text for s in SIGNAL_ANNOTATIONS.values()}
    r = parse_vehicle_reading({}, annotations)
    for value in (
        r.soc_percent,
        r.target_soc_percent,
        r.charger_power_kw,
        r.battery_temp_c,
        r.compute_temp_c,
        r.bandwidth_mbps,
    ):
        assert value is None or math.isfinite(value)
    assert r.soc_percent is None or 0 <= r.soc_percent <= 100
    assert r.battery_temp_c is None or -40 <= r.battery_temp_c <= 150
    # each field is valid xor has exactly one problem
    named = [p.field for p in r.problems]
    assert len(named) == len(set(named))
    for attr, suffix in SIGNAL_ANNOTATIONS.items():
        assert (getattr(r, attr) is None) == (suffix in named)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_soc_float_roundtrip(value: float) -> None:
    r = parse_vehicle_reading({}, {ANNOTATION_PREFIX + "soc-percent": repr(value)})
    if math.isfinite(value) and 0 <= value <= 100:
        assert r.soc_percent == value
    else:
        assert r.soc_percent is None
        assert kinds(r)["soc-percent"] in (ProblemKind.NON_FINITE, ProblemKind.OUT_OF_RANGE)


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.just(UTC),
    ),
    st.integers(min_value=1, max_value=86400),
)
def test_staleness_boundary(observed: datetime, limit: int) -> None:
    observed = observed.replace(microsecond=0)
    r = parse_vehicle_reading({}, good(**{"observed-at": format_time(observed)}))
    age = (NOW - observed).total_seconds()
    judged = r.at(NOW, limit)
    assert judged.stale == (age > limit or age < -30)
    if not judged.stale:
        assert judged.soc_percent == 72.5


def test_parse_decimal_rejects_bool_and_objects() -> None:
    assert parse_decimal("x", True)[1] == TelemetryProblem("x", "True", ProblemKind.UNPARSABLE)
    assert parse_decimal("x", [1])[0] is None
    assert parse_decimal("x", 3)[0] == 3.0
    assert parse_time("2026-11-25T12:00:00.123456+00:00") == NOW + timedelta(microseconds=123456)


def test_only_ascii_decimals_parse() -> None:
    for text in ("\uff15\uff10", "\u0665\u0660", "1_0", "0x10", "5 0", "--5"):
        assert parse_decimal("x", text) == (
            None,
            TelemetryProblem("x", text, ProblemKind.UNPARSABLE),
        ), text
    for text, number in (("50", 50.0), (" -1.5 ", -1.5), ("+2", 2.0), (".5", 0.5), ("1e3", 1e3)):
        assert parse_decimal("x", text) == (number, None), text
    assert parse_decimal("x", "1e309")[1] == TelemetryProblem("x", "1e309", ProblemKind.NON_FINITE)
