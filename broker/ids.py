"""Identifiers and pagination cursors.

Ids are a type prefix plus 26 Crockford base32 characters: 48 bits of
milliseconds then 80 random bits, so sorting by id sorts by creation time
and a cursor can simply be the last id seen.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime

from broker.errors import InvalidCursor
from broker.runtime import Runtime

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ID = re.compile(r"^[a-z]{3}_[0-9A-HJKMNP-TV-Z]{26}$")


def new_id(runtime: Runtime, prefix: str, now: datetime | None = None) -> str:
    """A new sortable id such as ``ent_01J9...``."""
    moment = now or runtime.now()
    millis = int(moment.timestamp() * 1000) & ((1 << 48) - 1)
    number = (millis << 80) | int.from_bytes(runtime.random_bytes(10), "big")
    chars = []
    for _ in range(26):
        number, digit = divmod(number, 32)
        chars.append(_ALPHABET[digit])
    return f"{prefix}_{''.join(reversed(chars))}"


def looks_like_id(value: str, prefix: str) -> bool:
    """True when ``value`` has the shape of an id with ``prefix``."""
    return value.startswith(prefix + "_") and bool(_ID.match(value))


def encode_cursor(last_id: str) -> str:
    """An opaque cursor pointing after ``last_id``."""
    return base64.urlsafe_b64encode(f"v1:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, prefix: str) -> str:
    """The id a cursor points after; :class:`InvalidCursor` if it is not ours."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise InvalidCursor("cursor is not one this service produced") from None
    version, _, last_id = text.partition(":")
    if version != "v1" or not looks_like_id(last_id, prefix):
        raise InvalidCursor("cursor is not one this service produced")
    return last_id
