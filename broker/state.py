"""The ``state`` JWT of one admin flow: minted when the admin clicks, verified on the way back.

The state travels through the admin's browser to Microsoft and back, so it is
public: it carries only what the callback needs to find and check its flow
(the flow id ``jti``, the action item, the action type, the callback URL) and a
SHA-256 hash of the browser-binding nonce. The nonce itself lives in an HttpOnly
cookie; the PKCE verifier and OIDC nonce live in the server-side flow record.

Tokens are HS256 JWTs signed with the active key of a :class:`StateKeyring`;
verification accepts any key of the ring so flows in flight survive a rotation.
:func:`verify_state` checks the token's shape and JOSE header itself before
handing it to PyJWT with the algorithm pinned, and checks the times against the
injected ``now`` (PyJWT only knows the system clock).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import jwt

from broker.errors import StateExpired, StateInvalid
from broker.tokens import RandomBytes, b64url, random_token

ALGORITHM = "HS256"
STATE_TYP = "ctt-state+jwt"
MAX_STATE_LENGTH = 4096
DEFAULT_LIFETIME_SECONDS = 600
# The flow is meant to take minutes; a longer-lived state only widens the window
# in which a leaked one is useful.
MAX_LIFETIME_SECONDS = 3600
MIN_SECRET_BYTES = 32  # RFC 7518 section 3.2: an HS256 key is at least 256 bits.
RANDOM_ID_BYTES = 16  # 128 bits for jti and the binding nonce.

# Custom claims are short because the state rides in a URL twice (to Microsoft and back).
CLAIM_ACTION_ITEM = "itm"
CLAIM_ACTION_TYPE = "aty"
CLAIM_CALLBACK_URL = "cbu"
CLAIM_BINDING = "bnd"
REQUIRED_CLAIMS = (
    "iss",
    "aud",
    "iat",
    "exp",
    "jti",
    CLAIM_ACTION_ITEM,
    CLAIM_ACTION_TYPE,
    CLAIM_CALLBACK_URL,
    CLAIM_BINDING,
)
_STRING_CLAIMS = ("jti", CLAIM_ACTION_ITEM, CLAIM_ACTION_TYPE, CLAIM_CALLBACK_URL, CLAIM_BINDING)
_HEADER_NAMES = frozenset({"alg", "typ", "kid"})

_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# An HS256 signature is 32 bytes: exactly 43 base64url characters without padding.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}")
# 43 characters hold 258 bits; the last character's two low bits are padding and
# must be zero, so only these 16 characters can end a canonical signature.
_CANONICAL_LAST_SIGNATURE_CHARS = frozenset("AEIMQUYcgkosw048")
# A PEM or OpenSSH public key used as an HMAC secret lets anyone with the public
# key forge states (the "HS/RS swap"); such a value is never a secret.
_PUBLIC_KEY_MARKERS = (b"-----BEGIN", b"ssh-", b"ecdsa-sha2-")


def _b64url_decode_canonical(text: str) -> bytes:
    """Decode unpadded base64url, refusing any text that is not the one canonical encoding.

    Raises ValueError. Python's decoder silently ignores non-zero padding bits
    and stray characters; re-encoding and comparing closes both doors.
    """
    if len(text) % 4 == 1 or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError("not unpadded base64url") from None
    if b64url(data) != text:
        raise ValueError("not the canonical base64url encoding")
    return data


def _require_aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.astimezone(UTC)


@dataclass(frozen=True)
class StateKeyring:
    """The HMAC keys that sign and verify states: one active key plus older ones still trusted.

    ``keys`` maps a key id (sent as the JOSE ``kid``) to a secret of at least
    32 bytes. New states are signed with ``active_kid``; any key in the ring
    verifies, so a rotation does not break flows already in flight.
    """

    keys: Mapping[str, bytes] = field(repr=False)
    active_kid: str

    def __post_init__(self) -> None:
        if not isinstance(self.keys, Mapping) or not self.keys:
            raise ValueError("a state keyring needs at least one key")
        for kid, secret in self.keys.items():
            if not isinstance(kid, str) or not _KID.fullmatch(kid):
                raise ValueError(
                    f"state key id {kid!r} must be 1-64 characters of A-Z a-z 0-9 . _ -"
                )
            if not isinstance(secret, bytes):
                raise ValueError(f"state key {kid!r}: the secret must be bytes")
            if len(secret) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"state key {kid!r}: the secret must be at least {MIN_SECRET_BYTES} bytes"
                )
            if secret.lstrip().startswith(_PUBLIC_KEY_MARKERS):
                raise ValueError(f"state key {kid!r}: a public key is not a secret")
        if self.active_kid not in self.keys:
            raise ValueError(f"active state key id {self.active_kid!r} is not in the keyring")
        # A private read-only copy: the caller's dict changing later must not change the ring.
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))

    def __repr__(self) -> str:
        return f"StateKeyring(active_kid={self.active_kid!r}, kids={sorted(self.keys)!r})"

    @classmethod
    def generate(cls, random_bytes: RandomBytes) -> StateKeyring:
        """A new keyring with one random 256-bit key under a random key id."""
        kid = random_token(random_bytes, 6)
        secret = random_bytes(MIN_SECRET_BYTES)
        if len(secret) != MIN_SECRET_BYTES:
            raise ValueError("random_bytes returned too few bytes for a state key")
        return cls(keys={kid: secret}, active_kid=kid)

    @classmethod
    def from_setting(cls, text: str) -> StateKeyring:
        """Parse ``kid1:base64url-secret,kid2:base64url-secret``; the first key is active.

        Raises ValueError naming the faulty entry (by position and key id, never
        the secret).
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the state keyring setting is empty")
        keys: dict[str, bytes] = {}
        for position, entry in enumerate(text.split(","), start=1):
            kid, sep, encoded = entry.strip().partition(":")
            kid, encoded = kid.strip(), encoded.strip()
            if not sep or not kid or not encoded:
                raise ValueError(f"state key #{position} is not KID:BASE64URL-SECRET")
            if not _KID.fullmatch(kid):
                raise ValueError(
                    f"state key #{position}: the key id must be 1-64 characters "
                    "of A-Z a-z 0-9 . _ -"
                )
            if kid in keys:
                raise ValueError(f"state key #{position}: key id {kid!r} appears twice")
            try:
                secret = _b64url_decode_canonical(encoded.rstrip("="))
            except ValueError:
                raise ValueError(f"state key {kid!r}: the secret is not valid base64url") from None
            if len(secret) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"state key {kid!r}: the secret must decode to at least "
                    f"{MIN_SECRET_BYTES} bytes, got {len(secret)}"
                )
            keys[kid] = secret
        return cls(keys=keys, active_kid=next(iter(keys)))

    def to_setting(self) -> str:
        """The keyring in the :meth:`from_setting` format, active key first. Contains secrets."""
        order = [self.active_kid, *(kid for kid in self.keys if kid != self.active_kid)]
        return ",".join(f"{kid}:{b64url(self.keys[kid])}" for kid in order)


@dataclass(frozen=True)
class FlowState:
    """What a verified state says about its flow. Times are UTC-aware."""

    jti: str
    action_item_id: str
    action_type: str
    callback_url: str
    binding_hash: str
    issued_at: datetime
    expires_at: datetime


def new_binding_nonce(random_bytes: RandomBytes) -> str:
    """A fresh browser-binding nonce (128 random bits, base64url) for the flow's cookie."""
    return random_token(random_bytes, RANDOM_ID_BYTES)


def binding_hash(nonce: str) -> str:
    """SHA-256 of the binding nonce, base64url without padding: what the state carries."""
    return b64url(hashlib.sha256(nonce.encode("utf-8")).digest())


def binding_matches(state: FlowState, cookie_nonce: str | None) -> bool:
    """True when the browser's cookie nonce is the one the state was minted for.

    Compared in constant time so the hash cannot be learned byte by byte.
    """
    # A nonce is 22 characters; anything huge is not ours and not worth hashing.
    if not cookie_nonce or len(cookie_nonce) > 256:
        return False
    return hmac.compare_digest(
        binding_hash(cookie_nonce).encode("ascii"), state.binding_hash.encode("utf-8")
    )


def mint_state(
    keyring: StateKeyring,
    *,
    issuer: str,
    audience: str,
    action_item_id: str,
    action_type: str,
    callback_url: str,
    binding_nonce: str,
    now: datetime,
    random_bytes: RandomBytes,
    lifetime_seconds: int = DEFAULT_LIFETIME_SECONDS,
) -> tuple[str, FlowState]:
    """Sign a new state for one flow; return the token and what it says.

    Only ``binding_hash(binding_nonce)`` goes into the token: the nonce stays in
    the admin's cookie. Raises ValueError on empty inputs, a naive ``now``, a
    lifetime outside 1..3600 seconds, or a token that would be too long to verify.
    """
    values = {
        "issuer": issuer,
        "audience": audience,
        "action_item_id": action_item_id,
        "action_type": action_type,
        "callback_url": callback_url,
        "binding_nonce": binding_nonce,
    }
    for name, value in values.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string")
    if (
        isinstance(lifetime_seconds, bool)
        or not isinstance(lifetime_seconds, int)
        or not 0 < lifetime_seconds <= MAX_LIFETIME_SECONDS
    ):
        raise ValueError(f"lifetime_seconds must be between 1 and {MAX_LIFETIME_SECONDS}")
    # JWT times are whole seconds; truncating keeps the returned FlowState equal
    # to what verify_state will read back.
    issued = int(_require_aware(now).timestamp())
    expires = issued + lifetime_seconds
    flow = FlowState(
        jti=random_token(random_bytes, RANDOM_ID_BYTES),
        action_item_id=action_item_id,
        action_type=action_type,
        callback_url=callback_url,
        binding_hash=binding_hash(binding_nonce),
        issued_at=datetime.fromtimestamp(issued, UTC),
        expires_at=datetime.fromtimestamp(expires, UTC),
    )
    # No nbf: a state is valid from the second it is minted, and the iat check
    # in verify_state already refuses one from the future.
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "iat": issued,
        "exp": expires,
        "jti": flow.jti,
        CLAIM_ACTION_ITEM: action_item_id,
        CLAIM_ACTION_TYPE: action_type,
        CLAIM_CALLBACK_URL: callback_url,
        CLAIM_BINDING: flow.binding_hash,
    }
    token = jwt.encode(
        claims,
        keyring.keys[keyring.active_kid],
        algorithm=ALGORITHM,
        headers={"typ": STATE_TYP, "kid": keyring.active_kid},
    )
    if len(token) > MAX_STATE_LENGTH:
        raise ValueError(f"the state would be {len(token)} characters, over {MAX_STATE_LENGTH}")
    return token, flow


def verify_state(
    token: object,
    keyring: StateKeyring,
    *,
    issuer: str,
    audience: str,
    now: datetime,
    leeway_seconds: int = 5,
) -> FlowState:
    """Check a state that came back from Microsoft and return what it says.

    Raises :class:`~broker.errors.StateExpired` when it is past ``exp`` (plus
    ``leeway_seconds``) and :class:`~broker.errors.StateInvalid` for anything
    else: wrong shape, algorithm, ``typ`` or key id, bad signature, foreign
    ``iss`` or ``aud``, issued in the future, missing or mistyped claims. Error
    details never echo the token.
    """
    moment = _require_aware(now).timestamp()
    if isinstance(leeway_seconds, bool) or not 0 <= leeway_seconds <= 300:
        raise ValueError("leeway_seconds must be between 0 and 300")
    text, key = _key_for(token, keyring)
    try:
        decoded = jwt.decode_complete(
            text,
            key,
            algorithms=[ALGORITHM],
            issuer=issuer,
            audience=audience,
            options={
                "require": list(REQUIRED_CLAIMS),
                "verify_signature": True,
                "verify_iss": True,
                "verify_aud": True,
                # One audience, as a string; a list holding ours among others is foreign.
                "strict_aud": True,
                "enforce_minimum_key_length": True,
                # PyJWT reads the system clock; the times are checked below against `now`.
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise StateInvalid("state signature does not verify") from None
    except (jwt.InvalidIssuerError, jwt.InvalidAudienceError):
        raise StateInvalid("state was issued by or for another party") from None
    except jwt.MissingRequiredClaimError:
        raise StateInvalid("state lacks a required claim") from None
    except jwt.PyJWTError:
        raise StateInvalid("state is not a valid token") from None

    claims: dict[str, Any] = decoded["payload"]
    for name in ("iat", "exp"):
        # bool is an int in Python; a signed `true` is still not a time.
        if isinstance(claims[name], bool) or not isinstance(claims[name], int):
            raise StateInvalid(f"state claim {name} is not an integer")
    for name in _STRING_CLAIMS:
        if not isinstance(claims[name], str) or not claims[name]:
            raise StateInvalid(f"state claim {name} is not a non-empty string")
    issued, expires = claims["iat"], claims["exp"]
    if expires <= issued:
        raise StateInvalid("state expires before it was issued")
    if issued > moment + leeway_seconds:
        raise StateInvalid("state was issued in the future")
    if expires <= moment - leeway_seconds:
        raise StateExpired("state has expired")
    try:
        issued_at = datetime.fromtimestamp(issued, UTC)
        expires_at = datetime.fromtimestamp(expires, UTC)
    except (OverflowError, OSError, ValueError):
        raise StateInvalid("state times are out of range") from None
    return FlowState(
        jti=claims["jti"],
        action_item_id=claims[CLAIM_ACTION_ITEM],
        action_type=claims[CLAIM_ACTION_TYPE],
        callback_url=claims[CLAIM_CALLBACK_URL],
        binding_hash=claims[CLAIM_BINDING],
        issued_at=issued_at,
        expires_at=expires_at,
    )


def _key_for(token: object, keyring: StateKeyring) -> tuple[str, bytes]:
    """Check the token's shape and JOSE header; return it with the key its ``kid`` names.

    Runs before any signature work so a hostile header never chooses how the
    token is verified.
    """
    if not isinstance(token, str) or len(token) > MAX_STATE_LENGTH:
        raise StateInvalid("state is missing or too long")
    if not _TOKEN_SHAPE.fullmatch(token):
        raise StateInvalid("state is not a compact JWS")
    header_text, payload_text, signature_text = token.split(".")
    # Each token must have exactly one spelling: a second spelling of the same
    # signature would be a different string that verifies (malleability).
    if signature_text[-1] not in _CANONICAL_LAST_SIGNATURE_CHARS:
        raise StateInvalid("state signature is not canonical base64url")
    try:
        _b64url_decode_canonical(payload_text)
        header = json.loads(
            _b64url_decode_canonical(header_text), object_pairs_hook=_no_duplicate_names
        )
    except (ValueError, RecursionError):
        raise StateInvalid("state header is not canonical base64url JSON") from None
    if not isinstance(header, dict):
        raise StateInvalid("state header is not a JSON object")
    # Anything beyond alg/typ/kid (jku, x5u, crit, b64...) could change how a
    # library reads the token; we never mint it, so we never accept it.
    if not set(header) <= _HEADER_NAMES:
        raise StateInvalid("state header has unexpected parameters")
    # Exact comparison: "none", "RS256", "hs256", a missing alg and non-strings
    # all fail here, before PyJWT sees the token.
    if header.get("alg") != ALGORITHM:
        raise StateInvalid("state algorithm is not allowed")
    if header.get("typ") != STATE_TYP:
        raise StateInvalid("token is not a state")
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in keyring.keys:
        raise StateInvalid("state was signed with an unknown key")
    return token, keyring.keys[kid]


def _no_duplicate_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # With duplicate names, parsers disagree on which value wins; refuse the ambiguity.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate name in JSON object")
    return result
