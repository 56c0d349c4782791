"""Callback URL policy: which URLs a provider may send the admin back to.

A callback URL is accepted only when it parses cleanly and its scheme, host,
port and path equal one of the provider's registered callbacks. The query may
vary (providers often carry their own ids there) but must not use a parameter
name the broker adds on return. Parsing uses ``urllib.parse`` plus an RFC 3986
validator, never string prefixes; suspicious input is refused outright rather
than "cleaned", and each refusal has its own error code.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from rfc3986_validator import validate_rfc3986

from broker import errors

MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}

# Names the broker appends when it redirects back; a provider URL using them
# would make the result ambiguous. Compared case-insensitively, because many
# web frameworks read ``State`` and ``state`` as one parameter.
RESERVED_PARAMETERS = frozenset(
    {"status", "actionType", "actionItemId", "state", "errorCode", "resultCode", "error"}
)
_RESERVED_FOLDED = frozenset(name.casefold() for name in RESERVED_PARAMETERS)

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# Percent-escapes that decode to separators, dots, control bytes or '%' itself:
# the classic ways to smuggle a different host or path past a naive check.
_DANGEROUS_ESCAPE = re.compile(
    r"%(?:0[0-9a-f]|1[0-9a-f]|7f|2[ef]|5c|40|3a|3f|23|25|[89a-f][0-9a-f])", re.I
)


@dataclass(frozen=True)
class CallbackUrl:
    """A parsed, normalised callback URL."""

    scheme: str
    host: str
    port: int
    path: str
    query: str

    @property
    def origin_and_path(self) -> tuple[str, str, int, str]:
        """What the allow-list compares: scheme, host, port, path."""
        return (self.scheme, self.host, self.port, self.path)

    @property
    def url(self) -> str:
        """The URL rebuilt from its checked parts (default ports omitted)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{host}{port}{self.path}{query}"

    @property
    def is_loopback(self) -> bool:
        """True for localhost, 127.0.0.0/8 and ::1."""
        return is_loopback_host(self.host)


def is_loopback_host(host: str) -> bool:
    """True when ``host`` (lower-case, unbracketed) is a loopback name or address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_callback_url(raw: str, *, development: bool) -> CallbackUrl:
    """Parse and check ``raw`` against every rule except the allow-list.

    ``development`` permits plain http on loopback hosts. Raises a
    :class:`errors.CallbackUrlRejected` subclass naming the first rule broken.
    """
    if len(raw) > MAX_URL_LENGTH:
        raise errors.CallbackUrlTooLong(f"callback URL is longer than {MAX_URL_LENGTH} characters")
    if "\\" in raw:
        raise errors.CallbackUrlBackslash("callback URL contains a backslash")
    if any(ord(ch) <= 0x20 or ord(ch) >= 0x7F for ch in raw):
        raise errors.CallbackUrlForbiddenCharacters(
            "callback URL contains whitespace, control or non-ASCII characters"
        )
    scheme_match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", raw)
    if not scheme_match:
        raise errors.CallbackUrlMalformed("callback URL is not an absolute URL")
    scheme = scheme_match.group(1).lower()
    if scheme not in DEFAULT_PORTS:
        raise errors.CallbackUrlSchemeNotAllowed(f"scheme {scheme!r} is not allowed")
    if not raw[len(scheme) + 1 :].startswith("//"):
        raise errors.CallbackUrlMalformed("callback URL has no authority (expected scheme://host)")
    try:
        parts = urlsplit(raw)
        parts.hostname  # noqa: B018 - urllib parses (and may refuse) brackets lazily
    except ValueError:
        raise errors.CallbackUrlMalformed("callback URL does not parse") from None
    if "@" in parts.netloc:
        raise errors.CallbackUrlUserinfo("callback URL must not contain user information")
    if "#" in raw:
        raise errors.CallbackUrlFragment("callback URL must not contain a fragment")
    if "%" in parts.netloc or _DANGEROUS_ESCAPE.search(parts.path):
        raise errors.CallbackUrlEncodingTrick(
            "callback URL percent-encodes its host, a separator, a dot or a control byte"
        )
    if re.search(r"%(?:0[0-9a-f]|1[0-9a-f]|7f)", parts.query, re.I):
        raise errors.CallbackUrlEncodingTrick("callback URL query encodes a control byte")
    if not validate_rfc3986(raw, rule="URI"):
        raise errors.CallbackUrlMalformed("callback URL is not a valid RFC 3986 URI")
    host = _checked_host(parts.netloc, parts.hostname)
    try:
        explicit_port = parts.port
    except ValueError:
        raise errors.CallbackUrlMalformed("callback URL has an invalid port") from None
    # Port 0 is falsy: compare with None, or ":0" would silently mean 443.
    port = DEFAULT_PORTS[scheme] if explicit_port is None else explicit_port
    if port == 0 or parts.netloc.endswith(":"):
        raise errors.CallbackUrlMalformed("callback URL has an invalid port")
    path = parts.path or "/"
    if any(segment in (".", "..") for segment in path.split("/")) or "//" in path:
        raise errors.CallbackUrlMalformed("callback URL path has empty or dot segments")
    if scheme == "http" and not (development and is_loopback_host(host)):
        raise errors.CallbackUrlInsecureHttp(
            "callback URL must use https (http only on loopback for development providers)"
        )
    reserved = reserved_names(parts.query)
    if reserved:
        raise errors.CallbackUrlReservedParameter(
            f"callback URL query uses reserved parameter(s): {', '.join(reserved)}"
        )
    return CallbackUrl(scheme=scheme, host=host, port=port, path=path, query=parts.query)


def reserved_names(query: str) -> list[str]:
    """The reserved parameter names ``query`` uses, however spelled or separated.

    ``;`` counts as a separator (older servers and some frameworks split on it)
    and names are compared case-insensitively after percent-decoding.
    """
    names: set[str] = set()
    for piece in re.split(r"[&;]", query):
        names.update(name for name, _ in parse_qsl(piece, keep_blank_values=True))
    return sorted(name for name in names if name.casefold() in _RESERVED_FOLDED)


def normalize_allowed_callback(raw: str, *, development: bool) -> CallbackUrl:
    """Check a URL a provider registers as allowed; it may not carry a query.

    Loopback hosts are accepted only for development providers.
    """
    parsed = parse_callback_url(raw, development=development)
    if parsed.query or "?" in raw:
        raise errors.CallbackUrlMalformed("an allowed callback URL must not carry a query")
    if parsed.is_loopback and not development:
        raise errors.CallbackUrlNotAllowed(
            "loopback callback URLs are only for providers marked for development"
        )
    return parsed


def check_callback_url(raw: str, allowed: Iterable[str], *, development: bool) -> CallbackUrl:
    """Accept ``raw`` only if it matches one of ``allowed`` exactly.

    ``allowed`` holds URLs previously normalised by :func:`normalize_allowed_callback`.
    """
    parsed = parse_callback_url(raw, development=development)
    entries = list(allowed)
    candidates = [parse_callback_url(entry, development=development) for entry in entries]
    for candidate in candidates:
        if candidate.origin_and_path == parsed.origin_and_path:
            return parsed
    misses = [
        {"allowedCallback": candidate.url, "difference": difference}
        for candidate in candidates
        if (difference := near_miss(parsed, candidate)) is not None
    ]
    hint = (
        f"; nearest: {misses[0]['allowedCallback']} ({misses[0]['difference']})" if misses else ""
    )
    raise errors.CallbackUrlNotAllowed(
        "callback URL does not match any allowed callback URL (scheme, host, port and path "
        f"must be equal){hint}",
        allowed_callbacks=[candidate.url for candidate in candidates],
        near_misses=misses,
    )


def near_miss(wanted: CallbackUrl, allowed: CallbackUrl) -> str | None:
    """How ``wanted`` differs from ``allowed`` when it is one small slip away, else None.

    The slips providers make: a trailing slash, a port, http for https, the case
    of the path. (Host case never matters: hosts are compared in lower case.)
    """
    same_origin = (wanted.scheme, wanted.host, wanted.port) == (
        allowed.scheme,
        allowed.host,
        allowed.port,
    )
    if same_origin and wanted.path.rstrip("/") == allowed.path.rstrip("/"):
        return "trailing slash"
    if same_origin and wanted.path.lower() == allowed.path.lower():
        return "path case"
    if (wanted.host, wanted.path) != (allowed.host, allowed.path):
        return None
    if wanted.scheme != allowed.scheme:
        return f"scheme ({wanted.scheme} instead of {allowed.scheme})"
    return f"port ({wanted.port} instead of {allowed.port})"


def _checked_host(netloc: str, hostname: str | None) -> str:
    if not hostname:
        raise errors.CallbackUrlMalformed("callback URL has no host")
    host = hostname.lower()
    if netloc.startswith("["):
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise errors.CallbackUrlMalformed("callback URL has an invalid IPv6 host") from None
        if address.ipv4_mapped is not None or "%" in host:
            raise errors.CallbackUrlMalformed("callback URL uses a mapped or scoped IPv6 host")
        return host
    if re.fullmatch(r"[0-9.]+", host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise errors.CallbackUrlMalformed("callback URL has an invalid IPv4 host") from None
    labels = host.split(".")
    if host == "localhost":
        return host
    # A name must be LDH labels ending in a label that starts with a letter:
    # this refuses hex/octal IPv4 spellings (0x7f.1) and trailing dots.
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise errors.CallbackUrlMalformed("callback URL host is not a valid DNS name")
    if len(labels) < 2 or not labels[-1][0].isalpha():
        raise errors.CallbackUrlMalformed("callback URL host is not a fully qualified name")
    return host
