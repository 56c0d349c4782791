"""Rate limits: who may ask how often, counted in memory or in Redis.

Four budgets, each a ``limits`` rate string from the settings:

- ``admin``: requests per client IP on the admin's pages (``/actions/...``,
  ``/oauth/callback``);
- ``link``: clicks per link handle, so one link clicked 200 times does not
  write 200 flows;
- ``auth_failure``: failed API authentications per client IP;
- ``api``: provider API requests per API key.

Counters live in the process (``memory://``) for one instance, or in Redis
(``redis://...``) so several instances share them. The client IP is the
socket peer, or the last ``X-Forwarded-For`` hop appended by a trusted proxy.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from broker import errors
from broker.settings import Settings

log = logging.getLogger("ctt_broker.ratelimits")

BUCKETS = ("admin", "link", "auth_failure", "api")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Verdict:
    """The answer to one hit: allowed, or refused until ``retry_after`` seconds pass."""

    allowed: bool
    retry_after: int = 0


class RateLimits:
    """The broker's four budgets on one storage."""

    def __init__(self, storage_uri: str, limits: dict[str, str], key_prefix: str) -> None:
        self.uses_network = not storage_uri.startswith("memory://")
        options: dict[str, str] = {} if not self.uses_network else {"key_prefix": key_prefix}
        storage = storage_from_string(storage_uri, **options)
        assert isinstance(storage, Storage)  # a sync URI gives a sync storage
        self._prefix = key_prefix
        self._strategy = FixedWindowRateLimiter(storage)
        self._items: dict[str, RateLimitItem] = {name: parse(limits[name]) for name in BUCKETS}

    def hit(self, bucket: str, key: str) -> Verdict:
        """Count one request against ``bucket`` for ``key``."""
        return self._ask(bucket, key, count=True)

    def check(self, bucket: str, key: str) -> Verdict:
        """Whether ``key`` still has room in ``bucket``, without counting."""
        return self._ask(bucket, key, count=False)

    def refuse_if_exhausted(self, bucket: str, key: str) -> None:
        """Raise :class:`errors.RateLimited` if ``key`` has no room left, without counting."""
        verdict = self.check(bucket, key)
        if not verdict.allowed:
            raise errors.RateLimited(
                "too many requests; try again later", retry_after=verdict.retry_after
            )

    def enforce(self, bucket: str, key: str) -> None:
        """Count one request; raise :class:`errors.RateLimited` when over the budget."""
        verdict = self.hit(bucket, key)
        if not verdict.allowed:
            raise errors.RateLimited(
                "too many requests; try again later", retry_after=verdict.retry_after
            )

    def _ask(self, bucket: str, key: str, *, count: bool) -> Verdict:
        item = self._items[bucket]
        # Keys are hashed: an API key or a link handle must never sit in Redis in clear.
        identity = hashlib.sha256(f"{self._prefix}:{key}".encode()).hexdigest()[:32]
        try:
            if count:
                allowed = self._strategy.hit(item, bucket, identity)
            else:
                allowed = self._strategy.test(item, bucket, identity)
            if allowed:
                return Verdict(True)
            reset = self._strategy.get_window_stats(item, bucket, identity).reset_time
        except Exception as exc:
            # Storage trouble (Redis down) must not take the whole broker down with it.
            log.warning("rate limit storage failed (%s); allowing the request", type(exc).__name__)
            return Verdict(True)
        return Verdict(False, max(1, math.ceil(reset - time.time())))


def open_rate_limits(settings: Settings) -> RateLimits:
    """The :class:`RateLimits` that ``settings`` describe."""
    return RateLimits(
        settings.rate_limit_storage,
        {
            "admin": settings.rate_limit_admin,
            "link": settings.rate_limit_link,
            "auth_failure": settings.rate_limit_auth_failures,
            "api": settings.rate_limit_api,
        },
        settings.rate_limit_key_prefix,
    )


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8, 192.0.2.7"`` -> networks; raises ValueError on a bad entry."""
    networks: list[Network] = []
    for part in text.split(","):
        entry = part.strip()
        if entry:
            networks.append(ipaddress.ip_network(entry, strict=False))
    return tuple(networks)


def client_ip(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy.

    Behind trusted proxies the client is the right-most ``X-Forwarded-For``
    address that is not itself a trusted proxy: everything left of it was
    written by the client and may be forged.
    """
    current = peer or "unknown"
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    while _is_trusted(current, trusted) and hops:
        candidate = hops.pop()
        try:
            current = str(ipaddress.ip_address(candidate))
        except ValueError:
            return current
    return current


def _is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
