"""RFC 3339 times as clients write them, read into aware datetimes.

``datetime.fromisoformat`` is not an RFC 3339 parser: it refuses the
lower-case ``t`` and ``z`` that RFC 3339 allows (its ABNF is case-insensitive),
and any leap second. This one reads every RFC 3339 ``date-time``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from broker import errors

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def parse_rfc3339(text: str) -> datetime:
    """Read an RFC 3339 ``date-time`` into an aware UTC datetime; ``ValueError`` otherwise.

    Fractions finer than a microsecond are cut off; a leap second (``:60``)
    reads as the last microsecond of its minute.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError("not an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    fraction, zulu, sign, offset_hours, offset_minutes = match.groups()[6:]
    microsecond = int((fraction or "0")[:6].ljust(6, "0"))
    if second == 60:
        second, microsecond = 59, 999999
    if zulu:
        zone = UTC
    else:
        hours, minutes = int(offset_hours), int(offset_minutes)
        if hours > 23 or minutes > 59:
            raise ValueError("RFC 3339 offset out of range")
        delta = timedelta(hours=hours, minutes=minutes)
        zone = timezone(delta if sign == "+" else -delta)
    moment = datetime(year, month, day, hour, minute, second, microsecond, tzinfo=zone)
    return moment.astimezone(UTC)


def rfc3339_parameter(name: str, text: str) -> datetime:
    """:func:`parse_rfc3339` for a request parameter: :class:`errors.InvalidRequest` if bad."""
    try:
        return parse_rfc3339(text)
    except ValueError:
        raise errors.InvalidRequest(f"{name} must be an RFC 3339 date-time") from None
