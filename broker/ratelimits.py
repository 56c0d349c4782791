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
socket peer, or the last ``X-Forwarded-For`` hop appended by a trusted proxy;
an IPv6 client is counted by its /64 network, which one subscriber holds whole.
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from broker import errors
from broker.settings import Settings

log = logging.getLogger("ctt_broker.ratelimits")

BUCKETS = ("admin", "link", "auth_failure", "api")
# Buckets keyed by the client's address.
IP_BUCKETS = frozenset({"admin", "auth_failure"})
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Verdict:
    """The answer to one hit: allowed, or refused until ``retry_after`` seconds pass."""

    allowed: bool
    retry_after: int = 0


class ProcessWindows:
    """Fixed-window counters in this process (``memory://``), with nothing running between hits.

    A key's window opens at its first hit and lasts the rate's period, as in Redis: a hit
    counts even when refused, and the window's end is when the key has room again.

    The ``limits`` library's memory storage started a thread about every 10 ms of traffic to
    sweep every live key, so its CPU grew with the number of clients seen in the last window
    (at 200 requests/s: 0.05 s of CPU per second with no other keys, 0.47 s with 100,000
    keys), which anyone with many addresses could drive up. Here, ended windows sit in a
    heap ordered by their end and the hits that come after drop them: a hit costs
    O(log n), and memory holds only windows that have not ended.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (end, hits)
        self._ends: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._windows)

    def hit(self, key: str, amount: int, period: float) -> tuple[bool, float]:
        """Count one hit; (allowed, end of the key's window)."""
        with self._lock:
            now = self._clock()
            self._drop_ended(now)
            end, hits = self._windows.get(key, (0.0, 0))
            if end <= now:
                end, hits = now + period, 0
                heapq.heappush(self._ends, (end, key))
            self._windows[key] = (end, hits + 1)
            return hits + 1 <= amount, end

    def test(self, key: str, amount: int) -> tuple[bool, float]:
        """Whether ``key`` has room for one more hit, without counting; (allowed, end)."""
        with self._lock:
            now = self._clock()
            self._drop_ended(now)
            end, hits = self._windows.get(key, (now, 0))
            return hits < amount, end

    def _drop_ended(self, now: float) -> None:
        ends, windows = self._ends, self._windows
        while ends and ends[0][0] <= now:
            end, key = heapq.heappop(ends)
            # A key whose window ended and opened again has a later entry: keep it.
            if windows.get(key, (None, 0))[0] == end:
                del windows[key]


def ip_bucket_key(address: str) -> str:
    """The key a client address is counted under: IPv4 as is, IPv6 by its /64.

    An IPv6 subscriber is given a /64 (or more) and may use any of its 2**64 addresses:
    counting each address would let one client spread its requests over as many budgets.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:192.0.2.7 is 192.0.2.7
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class RateLimits:
    """The broker's four budgets on one storage."""

    def __init__(
        self,
        storage_uri: str,
        limits: dict[str, str],
        key_prefix: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.uses_network = not storage_uri.startswith("memory://")
        self._prefix = key_prefix
        self._clock = clock
        self._windows: ProcessWindows | None = None
        self._strategy: FixedWindowRateLimiter | None = None
        if self.uses_network:
            storage = storage_from_string(storage_uri, key_prefix=key_prefix)
            assert isinstance(storage, Storage)  # a sync URI gives a sync storage
            self._strategy = FixedWindowRateLimiter(storage)
        else:
            self._windows = ProcessWindows(clock)
        self._items: dict[str, RateLimitItem] = {name: parse(limits[name]) for name in BUCKETS}

    @property
    def windows_held(self) -> int | None:
        """How many windows this process holds (``memory://``); None when Redis holds them."""
        return None if self._windows is None else len(self._windows)

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
        if bucket in IP_BUCKETS:
            key = ip_bucket_key(key)
        # Keys are hashed: an API key or a link handle must never sit in Redis in clear.
        identity = hashlib.sha256(f"{self._prefix}:{key}".encode()).hexdigest()[:32]
        if self._windows is not None:
            name = f"{bucket}/{identity}"
            if count:
                allowed, reset = self._windows.hit(name, item.amount, item.get_expiry())
            else:
                allowed, reset = self._windows.test(name, item.amount)
            if allowed:
                return Verdict(True)
            return Verdict(False, max(1, math.ceil(reset - self._clock())))
        assert self._strategy is not None
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
