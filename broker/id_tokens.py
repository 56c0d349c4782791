"""Checking the ID token Microsoft returns at the end of a sign-in.

MSAL's ``acquire_token_by_auth_code_flow`` compares the nonce but never checks the ID
token's signature, issuer or audience, so the broker does it here before believing any
claim: RS256 only, a key from the tenant's JWKS (refetched once on an unknown ``kid``),
``aud``, ``iss`` = ``{authority_host}/{tid}/v2.0``, ``exp``/``nbf``/``iat`` against an
injected clock, the nonce, and a work-or-school ``tid``.

Every refusal raises :class:`broker.errors.IdTokenInvalid` whose ``detail`` names the
failed check and whose ``extra["check"]`` is a stable short name for logs and tests, except
when Microsoft's keys cannot be fetched: that is :class:`broker.errors.MicrosoftUnavailable`
(``check="jwks_unavailable"``), an outage the admin may retry, not a bad token. The token
itself and the claim values are never put in an error.
"""

from __future__ import annotations

import hmac
import json
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from jwt.algorithms import RSAAlgorithm
from jwt.api_jws import PyJWS

from broker.errors import IdTokenInvalid, MicrosoftUnavailable
from broker.ids import is_guid

GLOBAL_ADMIN_ROLE_ID = "62e90394-69f5-4237-9190-012177145e10"
"""Directory role template id of Global Administrator, as it appears in ``wids``."""

PERSONAL_ACCOUNT_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
"""The tenant of personal Microsoft accounts: never an enterprise."""

MAX_ID_TOKEN_LENGTH = 16 * 1024
"""Longest token we parse. Entra ID tokens without group claims are 1-3 KiB."""

ALLOWED_ALGORITHM = "RS256"

# A kid longer than this is not Microsoft's (theirs are 27-40 characters); refusing it early
# keeps junk out of the refetch logic.
_MAX_KID_LENGTH = 256
# NumericDate bounds: anything outside is garbage and would overflow datetime conversion.
_MAX_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z

# Our own JWS verifier that knows no algorithm but RS256, so nothing registered on PyJWT's
# global object elsewhere in the process can widen what we accept.
_JWS = PyJWS(algorithms=[ALLOWED_ALGORITHM])


class HttpResponse(Protocol):
    """The part of an HTTP response the JWKS fetch reads (``httpx.Response`` fits)."""

    @property
    def status_code(self) -> int: ...

    def json(self) -> Any: ...


class HttpClient(Protocol):
    """The part of an HTTP client the JWKS fetch uses (``httpx.Client`` fits)."""

    def get(self, url: str, *, timeout: float) -> HttpResponse: ...


Clock = Callable[[], datetime]


def _refuse(check: str, detail: str) -> IdTokenInvalid:
    return IdTokenInvalid(detail, check=check)


def _unavailable(detail: str) -> MicrosoftUnavailable:
    # Microsoft being unreachable is not the token's fault: the admin may try again later.
    return MicrosoftUnavailable(detail, check="jwks_unavailable")


@dataclass
class _KeySet:
    keys: dict[str, RSAPublicKey]
    fetched_at: datetime


class JwksCache:
    """Signing keys per JWKS URI, fetched on demand and refetched sparingly.

    A token whose ``kid`` is not cached triggers one refetch, because Microsoft rolls its keys
    and publishes new ones before signing with them. Refetches of a URI are spaced by at least
    ``min_refetch_interval``: a flood of tokens with forged kids costs Microsoft one request
    per interval, not one per token. The price is that a genuinely new key may be refused for
    up to that interval right after such a flood. Keys older than ``max_age`` are refetched
    before use so that keys Microsoft withdrew stop being trusted.

    Thread-safe; the lock is held during a fetch so that concurrent misses fetch once.
    """

    def __init__(
        self,
        http_client: HttpClient,
        *,
        clock: Clock,
        timeout_seconds: float = 5.0,
        min_refetch_interval: timedelta = timedelta(seconds=60),
        max_age: timedelta = timedelta(hours=24),
    ) -> None:
        self._http = http_client
        self._clock = clock
        self._timeout = timeout_seconds
        self._min_refetch_interval = min_refetch_interval
        self._max_age = max_age
        self._lock = threading.Lock()
        self._sets: dict[str, _KeySet] = {}
        self._last_attempt: dict[str, datetime] = {}

    def key_for(self, jwks_uri: str, kid: str) -> RSAPublicKey:
        """The RSA public key with ``kid`` published at ``jwks_uri``.

        Raises IdTokenInvalid (``check="unknown_kid"``) when no such key is published (after
        at most one refetch), MicrosoftUnavailable (``check="jwks_unavailable"``) when the
        JWKS cannot be fetched.
        """
        with self._lock:
            now = self._clock()
            cached = self._sets.get(jwks_uri)
            fresh = cached is not None and now - cached.fetched_at < self._max_age
            if cached is not None and fresh and kid in cached.keys:
                return cached.keys[kid]
            if not self._may_fetch(jwks_uri, now):
                if cached is None or not fresh:
                    raise _unavailable("JWKS unavailable (recent fetch failed)")
                raise _refuse("unknown_kid", "unknown signing key id")
            self._last_attempt[jwks_uri] = now
            keys = self._fetch(jwks_uri)
            self._sets[jwks_uri] = _KeySet(keys=keys, fetched_at=now)
            if kid in keys:
                return keys[kid]
            raise _refuse("unknown_kid", "unknown signing key id")

    def _may_fetch(self, jwks_uri: str, now: datetime) -> bool:
        last = self._last_attempt.get(jwks_uri)
        return last is None or now - last >= self._min_refetch_interval

    def _fetch(self, jwks_uri: str) -> dict[str, RSAPublicKey]:
        try:
            response = self._http.get(jwks_uri, timeout=self._timeout)
            status = response.status_code
            document = response.json() if status == 200 else None
        # The client is injected (httpx, a test client...): any failure of its transport or
        # of JSON decoding means the same thing here, Microsoft did not answer usefully.
        except Exception as exc:
            raise _unavailable(f"JWKS fetch failed ({type(exc).__name__})") from None
        if status != 200:
            raise _unavailable(f"JWKS fetch failed (HTTP {status})")
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise _unavailable("JWKS document is malformed")
        keys: dict[str, RSAPublicKey] = {}
        for entry in document["keys"]:
            parsed = _rsa_signing_key(entry)
            if parsed is not None:
                keys[parsed[0]] = parsed[1]
        return keys


def _rsa_signing_key(entry: object) -> tuple[str, RSAPublicKey] | None:
    """``(kid, key)`` for an RSA signature key entry; None for anything we would not use."""
    # One odd entry (another key type, an encryption key) must not disable the whole set.
    if not isinstance(entry, dict):
        return None
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID_LENGTH:
        return None
    if entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig":
        return None
    if entry.get("alg", ALLOWED_ALGORITHM) != ALLOWED_ALGORITHM:
        return None
    try:
        key = RSAAlgorithm.from_jwk(entry)
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
    # A JWKS should never carry private members; if it does, verify with the public half only.
    if isinstance(key, RSAPrivateKey):
        key = key.public_key()
    return kid, key


@dataclass(frozen=True)
class IdTokenClaims:
    """The checked claims of a Microsoft ID token."""

    tenant_id: str
    object_id: str
    subject: str
    username: str | None
    name: str | None
    roles_wids: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    """Every claim, read-only (``dict(claims.raw)`` for a plain copy)."""

    @property
    def is_global_admin(self) -> bool:
        """True when the signed-in user holds the Global Administrator directory role."""
        return GLOBAL_ADMIN_ROLE_ID in self.roles_wids


def validate_id_token(
    id_token: str,
    *,
    jwks: JwksCache,
    jwks_uri: str,
    client_id: str,
    authority_host: str,
    expected_nonce: str,
    now: datetime,
    skew_seconds: int = 120,
) -> IdTokenClaims:
    """Verify a Microsoft v2.0 ID token and return its claims.

    ``expected_nonce`` is the value sent in the authorize request (with MSAL, the SHA-256 hex
    digest of ``flow["nonce"]``). ``authority_host`` is like ``https://login.microsoftonline.com``
    without a trailing slash. ``now`` must be timezone-aware; ``skew_seconds`` is allowed on each
    time check.

    Which tenant the user belongs to is not judged here: a LOGIN must come from the enterprise's
    own tenant, so the caller compares ``claims.tenant_id`` with the enterprise's tenant and
    reports a mismatch with its own error.

    Raises IdTokenInvalid: on any failed check, ``extra["check"]`` naming it;
    MicrosoftUnavailable when the signing keys cannot be fetched.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    kid = _check_header(id_token)
    key = jwks.key_for(jwks_uri, kid)
    claims = _verified_payload(id_token, key)

    tenant_id = _required_str(claims, "tid")
    if not is_guid(tenant_id):
        raise _refuse("tid", "tid is not a GUID")
    if tenant_id.lower() == PERSONAL_ACCOUNT_TENANT_ID:
        raise _refuse("personal_account", "personal Microsoft accounts cannot be used")

    audience = claims.get("aud")
    # Entra puts a single string here; a list would mean some other issuer's conventions.
    if not isinstance(audience, str) or audience != client_id:
        raise _refuse("aud", "aud is not this application")

    # Exact comparison: the issuer must name the same tenant as tid, on our authority host.
    if claims.get("iss") != f"{authority_host}/{tenant_id}/v2.0":
        raise _refuse("iss", "iss does not match the authority and tid")

    _check_times(claims, now, skew_seconds)

    nonce = claims.get("nonce")
    # Constant time: the nonce is a secret held by the admin's browser session.
    if not isinstance(nonce, str) or not hmac.compare_digest(
        # surrogatepass: JSON may carry lone surrogates, which must refuse, not crash.
        nonce.encode("utf-8", "surrogatepass"),
        expected_nonce.encode("utf-8", "surrogatepass"),
    ):
        raise _refuse("nonce", "nonce does not match the sign-in request")

    object_id = _required_str(claims, "oid")
    subject = _required_str(claims, "sub")
    return IdTokenClaims(
        tenant_id=tenant_id,
        object_id=object_id,
        subject=subject,
        username=_optional_str(claims, "preferred_username"),
        name=_optional_str(claims, "name"),
        roles_wids=_wids(claims),
        issued_at=datetime.fromtimestamp(_numeric_date(claims, "iat"), UTC),
        expires_at=datetime.fromtimestamp(_numeric_date(claims, "exp"), UTC),
        raw=MappingProxyType(claims),
    )


def _check_header(id_token: object) -> str:
    """The token's ``kid`` once the shape and ``alg`` are acceptable."""
    if not isinstance(id_token, str) or not id_token:
        raise _refuse("format", "ID token missing")
    # Cap before any decoding: a caller-supplied megabyte must not cost base64 and JSON work.
    if len(id_token) > MAX_ID_TOKEN_LENGTH:
        raise _refuse("format", "ID token too long")
    if not id_token.isascii() or id_token.count(".") != 2:
        raise _refuse("format", "ID token is not a compact JWS")
    try:
        header = _JWS.get_unverified_header(id_token)
    except jwt.PyJWTError:
        raise _refuse("format", "ID token header is malformed") from None
    # Exactly RS256: not none, not HS256 (an attacker HMACing with our public key), not ES256.
    if header.get("alg") != ALLOWED_ALGORITHM:
        raise _refuse("alg", "ID token algorithm is not RS256")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID_LENGTH:
        raise _refuse("kid", "ID token has no usable kid")
    return kid


def _verified_payload(id_token: str, key: RSAPublicKey) -> dict[str, Any]:
    try:
        # Signature only: PyJWT's claim checks would use the wall clock and its own rules,
        # so every claim is checked below against the injected clock instead.
        decoded = _JWS.decode_complete(
            id_token,
            key=key,
            algorithms=[ALLOWED_ALGORITHM],
            options={"verify_signature": True, "enforce_minimum_key_length": True},
        )
    except jwt.PyJWTError:
        raise _refuse("signature", "ID token signature is not valid") from None
    try:
        claims = json.loads(decoded["payload"])
    except (ValueError, RecursionError):
        raise _refuse("format", "ID token payload is not JSON") from None
    if not isinstance(claims, dict):
        raise _refuse("format", "ID token payload is not a JSON object")
    return claims


def _check_times(claims: Mapping[str, Any], now: datetime, skew_seconds: int) -> None:
    current = now.timestamp()
    expires = _numeric_date(claims, "exp")
    issued = _numeric_date(claims, "iat")
    if current >= expires + skew_seconds:
        raise _refuse("exp", "ID token has expired")
    if issued > current + skew_seconds:
        raise _refuse("iat", "ID token is issued in the future")
    if "nbf" in claims and _numeric_date(claims, "nbf") > current + skew_seconds:
        raise _refuse("nbf", "ID token is not valid yet")


def _numeric_date(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    # bool is an int in Python; "exp": true must not read as 1970-01-01T00:00:01.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refuse(name, f"{name} is missing or not a number")
    if not math.isfinite(value) or not 0 <= value <= _MAX_TIMESTAMP:
        raise _refuse(name, f"{name} is out of range")
    return float(value)


def _required_str(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise _refuse(name, f"{name} is missing")
    return value


def _optional_str(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _refuse(name, f"{name} is not a string")
    return value


def _wids(claims: Mapping[str, Any]) -> tuple[str, ...]:
    value = claims.get("wids")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _refuse("wids", "wids is not a list of strings")
    return tuple(value)
