"""RS256 signing keys and the published JWKS, with rotation."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    """One RSA key pair with its key id."""

    kid: str
    private_key: rsa.RSAPrivateKey = field(repr=False)

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh 2048-bit key whose kid is a thumbprint of its public key, like Entra's."""
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        der = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # Entra's kid is a SHA-1 thumbprint (x5t): an identifier here, not a security primitive.
        digest = hashlib.sha1(der, usedforsecurity=False).digest()
        kid = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
        return cls(kid=kid, private_key=private_key)

    def jwk(self, issuer: str) -> dict[str, object]:
        """The public half as a JWK entry."""
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": _b64url_uint(numbers.n),
            "e": _b64url_uint(numbers.e),
            "issuer": issuer,
        }

    def sign(self, claims: Mapping[str, object]) -> str:
        """A compact RS256 JWS of `claims` with `kid` in the header."""
        return jwt.encode(
            dict(claims),
            self.private_key,
            algorithm="RS256",
            headers={"kid": self.kid, "typ": "JWT"},
        )


class KeyRing:
    """The keys the emulator publishes and the one it signs with. Not thread-safe on its own."""

    def __init__(self) -> None:
        first = SigningKey.generate()
        self._published: list[SigningKey] = [first]
        self._active = first

    @property
    def active(self) -> SigningKey:
        """The key new tokens are signed with."""
        return self._active

    @property
    def published(self) -> tuple[SigningKey, ...]:
        """Keys listed in the JWKS, oldest first."""
        return tuple(self._published)

    def rotate(self) -> SigningKey:
        """Publish a new key and sign with it from now on; old keys stay published."""
        key = SigningKey.generate()
        self._published.append(key)
        self._active = key
        return key

    def use_unpublished_key(self) -> SigningKey:
        """Sign with a key that is never published, so verifiers see an unknown kid."""
        self._active = SigningKey.generate()
        return self._active
