"""Destination policy: where the broker itself may send a request (webhook URLs).

The callback policy (:mod:`broker.callbacks`) decides where an admin's *browser*
may be sent; this module decides where the *broker* may connect, which is the
harder question: a request from inside our network must never reach inside it.

One rule, applied twice: when a webhook URL is set (:func:`check_webhook_url`)
and when an attempt is about to connect (:func:`pick_address`), after the one
DNS resolution whose answer the connection then uses. An address is refused
when it falls in any range of :data:`BLOCKED_NETWORKS`, an explicit list,
rather than trusting ``ipaddress.is_global`` alone (which lets through
``::127.0.0.1``, ``64:ff9b::7f00:1`` and ``fec0::1``). Ranges that tunnel or
translate IPv4 (mapped, compatible, NAT64, 6to4, Teredo) are refused whole,
and the IPv4 address a mapped, compatible or 6to4 one embeds is named in the
refusal so an operator sees what was aimed at.

Development providers may use loopback (the sandbox's receiver), never in
production mode.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from broker import errors
from broker.callbacks import CallbackUrl, parse_callback_url

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Sequence[str]]

_N4 = ipaddress.IPv4Network
_N6 = ipaddress.IPv6Network

LOOPBACK_NETWORKS: tuple[_N4 | _N6, ...] = (_N4("127.0.0.0/8"), _N6("::1/128"))

# (range, why it is refused). Order matters only for the reason reported.
BLOCKED_NETWORKS: tuple[tuple[_N4 | _N6, str], ...] = (
    (_N4("0.0.0.0/8"), "unspecified / this network"),
    (_N4("10.0.0.0/8"), "private"),
    (_N4("100.64.0.0/10"), "carrier-grade NAT"),
    (_N4("127.0.0.0/8"), "loopback"),
    (_N4("169.254.0.0/16"), "link-local"),
    (_N4("172.16.0.0/12"), "private"),
    (_N4("192.0.0.0/24"), "IETF protocol assignments"),
    (_N4("192.0.2.0/24"), "documentation"),
    (_N4("192.88.99.0/24"), "6to4 relay anycast"),
    (_N4("192.168.0.0/16"), "private"),
    (_N4("198.18.0.0/15"), "benchmarking"),
    (_N4("198.51.100.0/24"), "documentation"),
    (_N4("203.0.113.0/24"), "documentation"),
    (_N4("224.0.0.0/4"), "multicast"),
    (_N4("240.0.0.0/4"), "reserved"),
    (_N4("255.255.255.255/32"), "broadcast"),
    (_N6("::/128"), "unspecified"),
    (_N6("::1/128"), "loopback"),
    (_N6("::ffff:0:0/96"), "IPv4-mapped"),
    (_N6("::/96"), "IPv4-compatible"),
    (_N6("64:ff9b::/96"), "NAT64"),
    (_N6("64:ff9b:1::/48"), "local-use NAT64"),
    (_N6("100::/64"), "discard-only"),
    (_N6("2001::/32"), "Teredo"),
    (_N6("2001:2::/48"), "benchmarking"),
    (_N6("2001:db8::/32"), "documentation"),
    (_N6("2001:10::/28"), "ORCHID"),
    (_N6("2002::/16"), "6to4"),
    (_N6("3fff::/20"), "documentation"),
    (_N6("fc00::/7"), "unique local"),
    (_N6("fe80::/10"), "link-local"),
    (_N6("fec0::/10"), "site-local"),
    (_N6("ff00::/8"), "multicast"),
)


@dataclass(frozen=True)
class Destination:
    """A checked webhook target: the URL to send to and the address to connect to."""

    url: CallbackUrl
    address: str


def blocked_reason(address: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why the broker must not connect to ``address``; ``None`` when it may.

    ``allow_loopback`` lets 127.0.0.0/8 and ::1 through (development providers).
    """
    if allow_loopback and any(address in network for network in LOOPBACK_NETWORKS):
        return None
    for network, why in BLOCKED_NETWORKS:
        if address.version == network.version and address in network:
            embedded = _embedded_ipv4(address)
            return f"{why} address" + (f" (embeds {embedded})" if embedded else "")
    # Anything the explicit list missed but the IANA registries call non-global.
    if not address.is_global:
        return "non-global address"
    return None


def check_webhook_url(raw: str, *, development: bool, production: bool) -> str:
    """Check a webhook URL as it is set; return its normalised form.

    Parsed with the callback rules (https only, except http on loopback for a
    development provider). A literal address must pass :func:`blocked_reason`;
    names are checked again at every send, after resolution. Raises
    :class:`errors.CallbackUrlRejected` or :class:`errors.WebhookUrlBlocked`.
    """
    allow_loopback = _allows_loopback(development=development, production=production)
    parsed = parse_callback_url(raw, development=allow_loopback)
    if parsed.is_loopback and not allow_loopback:
        raise errors.WebhookUrlBlocked("webhook URL targets loopback (development providers only)")
    literal = _literal(parsed.host)
    if literal is not None:
        reason = blocked_reason(literal, allow_loopback=allow_loopback)
        if reason is not None:
            raise errors.WebhookUrlBlocked(f"webhook URL targets a {reason}")
    return parsed.url


def pick_address(
    raw: str, *, development: bool, production: bool, resolve: Resolver
) -> Destination:
    """Resolve a stored webhook URL once and choose the address to connect to.

    Every address the name resolves to must be allowed (one private answer in
    the set refuses it): the connection then goes to the first one, so no
    second lookup can swap in another. Raises :class:`errors.WebhookUrlBlocked`
    when the URL or an address is refused and :class:`DestinationUnresolved`
    when the name does not resolve.
    """
    allow_loopback = _allows_loopback(development=development, production=production)
    try:
        parsed = parse_callback_url(raw, development=allow_loopback)
    except errors.CallbackUrlRejected as exc:
        raise errors.WebhookUrlBlocked(f"webhook URL refused: {exc.code}") from None
    if parsed.host == "localhost" and not allow_loopback:
        raise errors.WebhookUrlBlocked("webhook URL targets loopback")
    literal = _literal(parsed.host)
    if literal is not None:
        candidates: Sequence[str] = [str(literal)]
    elif parsed.host == "localhost":
        candidates = ["127.0.0.1"]
    else:
        try:
            candidates = list(resolve(parsed.host))
        except OSError as exc:
            raise DestinationUnresolved(f"cannot resolve {parsed.host}") from exc
        if not candidates:
            raise DestinationUnresolved(f"{parsed.host} has no address")
    addresses: list[IPAddress] = []
    for text in candidates:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            raise errors.WebhookUrlBlocked("the resolver gave a non-address") from None
        reason = blocked_reason(address, allow_loopback=allow_loopback)
        if reason is not None:
            raise errors.WebhookUrlBlocked(f"{parsed.host} resolves to a {reason}")
        addresses.append(address)
    return Destination(url=parsed, address=str(addresses[0]))


class DestinationUnresolved(OSError):
    """Raised by :func:`pick_address` when DNS gives no answer (retried later)."""


def system_resolver(host: str) -> list[str]:
    """The addresses ``host`` resolves to (raises ``OSError`` when it does not)."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _allows_loopback(*, development: bool, production: bool) -> bool:
    return development and not production


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    packed = int(address)
    if packed >> 32 == 0 or (packed >> 32) == (0x64FF9B << 64):
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    return None
