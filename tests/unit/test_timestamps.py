"""RFC 3339 times as clients write them (``GET /events?since=...z`` once answered 500)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import errors
from broker.timestamps import parse_rfc3339, rfc3339_parameter

moments = st.datetimes(
    min_value=datetime(1900, 1, 2), max_value=datetime(2999, 12, 30), timezones=st.just(UTC)
)
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@given(moment=moments, zone=offsets, t=st.sampled_from("Tt"), z=st.sampled_from("Zz"))
def test_every_spelling_of_a_moment_reads_back_as_that_moment(
    moment: datetime, zone: timezone, t: str, z: str
) -> None:
    local = moment.astimezone(zone)
    text = local.isoformat(timespec="microseconds").replace("T", t)
    assert parse_rfc3339(text) == moment
    if zone.utcoffset(None) == timedelta(0):
        assert parse_rfc3339(text[: -len("+00:00")] + z) == moment
    whole = local.replace(microsecond=0).isoformat().replace("T", t)
    assert parse_rfc3339(whole) == moment.replace(microsecond=0)


def test_long_fractions_and_leap_seconds_are_read() -> None:
    assert parse_rfc3339("2020-01-01t00:00:00.123456789z").microsecond == 123456
    assert parse_rfc3339("2016-12-31T23:59:60Z") == datetime(2016, 12, 31, 23, 59, 59, 999999, UTC)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2020-01-01",
        "2020-01-01 00:00:00Z",
        "2020-13-01T00:00:00Z",
        "2020-01-01T00:00:00",
        "2020-01-01T00:00:00+24:00",
        "2020-01-01T00:00:00+0100",
        "\uff12\uff10\uff12\uff10-01-01T00:00:00Z",  # full-width digits,
    ],
)
def test_anything_else_is_a_bad_request_not_a_500(text: str) -> None:
    with pytest.raises(errors.InvalidRequest):
        rfc3339_parameter("since", text)
