"""Identifiers and pagination cursors.

Ids are a type prefix plus 26 Crockford base32 characters: 48 bits of
milliseconds then 80 random bits, so sorting by id sorts by creation time
and a pagination cursor is simply the last id seen.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime

from broker.errors import InvalidCursor
from broker.runtime import Runtime

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ID = re.compile(r"^[a-z]{3}_[0-9A-HJKMNP-TV-Z]{26}$")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def is_guid(value: object) -> bool:
    """Whether ``value`` is a GUID (a Microsoft tenant, app or bot id) with nothing around it."""
    return isinstance(value, str) and _GUID.fullmatch(value) is not None


_last_lock = threading.Lock()
_last: list[int] = [0]


def new_id(runtime: Runtime, prefix: str, now: datetime | None = None) -> str:
    """A new sortable id such as ``ent_01J9...``.

    Within one process ids are strictly increasing even inside one millisecond
    (the random part is incremented, as monotonic ULIDs do), so events written
    by one transaction keep their order.
    """
    moment = now or runtime.now()
    millis = int(moment.timestamp() * 1000) & ((1 << 48) - 1)
    number = (millis << 80) | int.from_bytes(runtime.random_bytes(10), "big")
    with _last_lock:
        if number <= _last[0] and (_last[0] >> 80) == millis:
            number = _last[0] + 1
        _last[0] = number
    chars = []
    for _ in range(26):
        number, digit = divmod(number, 32)
        chars.append(_ALPHABET[digit])
    return f"{prefix}_{''.join(reversed(chars))}"


def looks_like_id(value: str, prefix: str) -> bool:
    """True when ``value`` has the shape of an id with ``prefix``."""
    return value.startswith(prefix + "_") and bool(_ID.match(value))


def encode_cursor(last_id: str) -> str:
    """The cursor pointing after ``last_id``: keyset pagination on the sortable id."""
    return last_id


def decode_cursor(cursor: str, prefix: str) -> str:
    """The id a cursor points after; :class:`InvalidCursor` if it is not an id of that kind."""
    if not looks_like_id(cursor, prefix):
        raise InvalidCursor(f"cursor must be an id starting with {prefix}_")
    return cursor
