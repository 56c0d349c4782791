"""Random tokens and the digests stored in their place.

API keys, link handles and result codes are long random strings handed out
once; only their SHA-256 is stored, so a database leak yields nothing usable.
A plain hash suits them: they carry 256 bits, nothing to brute-force.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

RandomBytes = Callable[[int], bytes]


def b64url(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def random_token(random_bytes: RandomBytes, size: int = 32) -> str:
    """``size`` random bytes as unpadded base64url (32 bytes: 43 characters)."""
    data = random_bytes(size)
    # A short read from a faulty source would silently weaken every token minted.
    if len(data) != size:
        raise ValueError(f"random_bytes returned {len(data)} bytes, expected {size}")
    return b64url(data)


def digest(token: str) -> str:
    """SHA-256 hex of a token, as stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
