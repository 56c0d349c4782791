"""Secrets the broker holds: Microsoft app credentials and its own signing keys.

Production takes every one from settings (validated at start-up). The sandbox
uses fixed credentials shared with the emulator and generates its signing keys
once into the data folder (mode 0600), so several workers agree on them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker.catalog import Catalog
from broker.event_sealing import EventKeyring
from broker.settings import Settings
from broker.state import StateKeyring
from broker.tokens import RandomBytes, b64url

_SANDBOX_NAMESPACE = uuid.UUID("6f1d3c2e-8a4b-4c5d-9e6f-7a8b9c0d1e2f")


@dataclass(frozen=True)
class AppCredential:
    """One Microsoft app registration the broker acts as."""

    client_id: str
    client_secret: str = field(repr=False)
    home_tenant_id: str | None = None
    certificate: CertificateCredential | None = None

    def msal_credential(self, token_endpoint: str) -> str | dict[str, Any]:
        """What MSAL takes as ``client_credential``: the secret, or a client assertion.

        A certificate signs a fresh assertion (RFC 7523; RS256, ``x5t`` = the SHA-1
        thumbprint) at every token request. We sign it ourselves: MSAL's own assertion is
        bytes, which an httpx client sends as the text ``b'...'`` (AADSTS50027).
        """
        if self.certificate is None:
            return self.client_secret
        certificate = self.certificate

        def assertion() -> str:
            now = int(time.time())
            claims = {
                "aud": token_endpoint,
                "iss": self.client_id,
                "sub": self.client_id,
                "jti": str(uuid.uuid4()),
                "nbf": now,
                "iat": now,
                "exp": now + 600,
            }
            x5t = b64url(bytes.fromhex(certificate.thumbprint))
            return jwt.encode(
                claims, certificate.private_key, algorithm="RS256", headers={"x5t": x5t}
            )

        return {"client_assertion": assertion}


@dataclass(frozen=True)
class CertificateCredential:
    """A certificate credential (Microsoft's recommendation over client secrets)."""

    private_key: str = field(repr=False)
    thumbprint: str
    public_certificate: str | None = None


@dataclass(frozen=True)
class Credentials:
    """Everything secret, loaded once per process."""

    apps: Mapping[str, AppCredential]
    state_keyring: StateKeyring
    result_key: ec.EllipticCurvePrivateKey = field(repr=False)

    def app(self, name: str) -> AppCredential:
        """Credentials of the catalog's ``app`` ``name``."""
        return self.apps[name]

    @property
    def result_kid(self) -> str:
        """Key id of the result signing key: a thumbprint of its public half."""
        return _thumbprint(self.result_key.public_key())

    def jwks(self) -> dict[str, Any]:
        """The public JWKS a provider uses to verify form_post result JWTs."""
        numbers = self.result_key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "EC",
                    "crv": "P-256",
                    "use": "sig",
                    "alg": "ES256",
                    "kid": self.result_kid,
                    "x": b64url(numbers.x.to_bytes(32, "big")),
                    "y": b64url(numbers.y.to_bytes(32, "big")),
                }
            ]
        }


# A tenant GUID or a verified domain: what Microsoft accepts in the authority path.
_TENANT = re.compile(r"[0-9a-fA-F-]{36}|[A-Za-z0-9][A-Za-z0-9.-]{0,252}\.[A-Za-z]{2,63}")


def sandbox_app_credentials(catalog: Catalog) -> dict[str, AppCredential]:
    """Deterministic credentials per catalog app; the sandbox emulator registers the same."""
    return {
        app: AppCredential(
            client_id=str(uuid.uuid5(_SANDBOX_NAMESPACE, app)),
            client_secret=f"sandbox-{app}-secret",
        )
        for app in dict.fromkeys(spec.app for spec in catalog.actions)
    }


def load_credentials(
    settings: Settings, catalog: Catalog, random_bytes: RandomBytes
) -> Credentials:
    """Build :class:`Credentials`; raise ``ValueError`` naming every problem."""
    problems: list[str] = []
    apps = _app_credentials(settings, catalog, problems)
    keyring = _state_keyring(settings, random_bytes, problems)
    result_key = _result_key(settings, problems)
    if settings.event_keys:
        # Checked at start-up, not at the first sealed event in the middle of a callback.
        try:
            EventKeyring.from_setting(settings.event_keys)
        except ValueError as exc:
            problems.append(f"CTT_EVENT_KEYS: {exc}")
    if problems:
        raise ValueError("; ".join(problems))
    assert keyring is not None and result_key is not None
    return Credentials(apps=apps, state_keyring=keyring, result_key=result_key)


def _app_credentials(
    settings: Settings, catalog: Catalog, problems: list[str]
) -> dict[str, AppCredential]:
    text = settings.app_credentials
    if not text:
        return sandbox_app_credentials(catalog)
    try:
        if text.startswith("@"):
            text = Path(text[1:]).read_text("utf-8")
        document = json.loads(text)
    except (OSError, ValueError) as exc:
        problems.append(f"CTT_APP_CREDENTIALS: cannot be read as JSON ({type(exc).__name__})")
        return {}
    apps: dict[str, AppCredential] = {}
    for app in dict.fromkeys(spec.app for spec in catalog.actions):
        entry = document.get(app) if isinstance(document, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("clientId"), str):
            problems.append(f"CTT_APP_CREDENTIALS: {app!r} needs clientId")
            continue
        certificate = None
        if entry.get("certificateKeyFile"):
            certificate = _certificate_credential(app, entry, problems)
            if certificate is None:
                continue
        elif not (isinstance(entry.get("clientSecret"), str) and entry["clientSecret"]):
            problems.append(
                f"CTT_APP_CREDENTIALS: {app!r} needs clientSecret or certificateKeyFile"
            )
            continue
        home = entry.get("homeTenantId")
        if home is not None and not (isinstance(home, str) and _TENANT.fullmatch(home)):
            problems.append(f"CTT_APP_CREDENTIALS: {app!r} homeTenantId is not a tenant id")
            continue
        apps[app] = AppCredential(
            entry["clientId"], entry.get("clientSecret") or "", home, certificate
        )
    return apps


def _certificate_credential(
    app: str, entry: Mapping[str, Any], problems: list[str]
) -> CertificateCredential | None:
    """``certificateKeyFile`` (PEM private key) with ``certificateFile`` (PEM certificate,
    whose thumbprint is computed) or ``certificateThumbprint`` (hex SHA-1, as the portal shows)."""
    where = f"CTT_APP_CREDENTIALS: {app!r}"
    try:
        key_pem = Path(str(entry["certificateKeyFile"])).read_text("utf-8")
        serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (OSError, ValueError, TypeError):
        problems.append(f"{where} certificateKeyFile is not a readable unencrypted PEM key")
        return None
    if entry.get("certificateFile"):
        try:
            cert_pem = Path(str(entry["certificateFile"])).read_text("utf-8")
            certificate = x509.load_pem_x509_certificate(cert_pem.encode())
        except (OSError, ValueError):
            problems.append(f"{where} certificateFile is not a readable PEM certificate")
            return None
        thumbprint = certificate.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303
        return CertificateCredential(key_pem, thumbprint, cert_pem)
    thumbprint = str(entry.get("certificateThumbprint", "")).replace(":", "").upper()
    if not re.fullmatch(r"[0-9A-F]{40}", thumbprint):
        problems.append(f"{where} needs certificateFile or a 40-hex certificateThumbprint")
        return None
    return CertificateCredential(key_pem, thumbprint)


def _state_keyring(
    settings: Settings, random_bytes: RandomBytes, problems: list[str]
) -> StateKeyring | None:
    try:
        if settings.state_keys:
            return StateKeyring.from_setting(settings.state_keys)
        path = settings.data_dir / "state-keys"
        if not path.exists():
            _write_private(path, StateKeyring.generate(random_bytes).to_setting())
        return StateKeyring.from_setting(path.read_text("utf-8").strip())
    except (OSError, ValueError) as exc:
        problems.append(f"CTT_STATE_KEYS: {exc}")
        return None


def _result_key(settings: Settings, problems: list[str]) -> ec.EllipticCurvePrivateKey | None:
    path = Path(settings.result_signing_key_file or settings.data_dir / "result-signing-key.pem")
    try:
        if not settings.result_signing_key_file and not path.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            _write_private(path, pem.decode("ascii"))
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        problems.append(f"CTT_RESULT_SIGNING_KEY_FILE: {type(exc).__name__}: cannot load {path}")
        return None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != "secp256r1":
        problems.append("CTT_RESULT_SIGNING_KEY_FILE: must be an EC P-256 private key")
        return None
    return loaded


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Written aside, then hard-linked into place: two workers starting together end
    # up reading the same complete file, whichever wins the link.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()


def _thumbprint(public_key: ec.EllipticCurvePublicKey) -> str:
    numbers = public_key.public_numbers()
    canonical = json.dumps(
        {
            "crv": "P-256",
            "kty": "EC",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        },
        separators=(",", ":"),
        sort_keys=True,
    )
    return b64url(hashlib.sha256(canonical.encode()).digest())
