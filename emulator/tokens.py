"""Claim sets for the ID tokens and Microsoft Graph access tokens the emulator issues."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import uuid

from emulator.config import CONSUMERS_TENANT_ID, GRAPH_RESOURCE, AppRegistration, User

_NAMESPACE = uuid.UUID("5d9bd1c2-4d63-4a0e-9f6c-0b0d2c9c6e11")


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _uti() -> str:
    # Entra's uti is a short opaque token id; 16 random bytes base64url-encoded looks the part.
    return _b64url(secrets.token_bytes(16))


def pairwise_sub(oid: str, client_id: str) -> str:
    """Entra's `sub` is pairwise: stable per user and app, different across apps."""
    return _b64url(hashlib.sha256(f"{oid}|{client_id.lower()}".encode()).digest())[:43]


def service_principal_oid(tenant_id: str, client_id: str) -> str:
    """A deterministic object id for the app's service principal in a tenant."""
    return str(uuid.uuid5(_NAMESPACE, f"sp|{tenant_id.lower()}|{client_id.lower()}"))


def client_info(oid: str, tenant_id: str) -> str:
    """base64url JSON `{uid, utid}`, which MSAL uses to build the home account id."""
    return _b64url(json.dumps({"uid": oid, "utid": tenant_id}).encode())


def id_token_claims(
    *,
    issuer_base: str,
    app: AppRegistration,
    user: User,
    tenant_id: str,
    nonce: str | None,
    scopes: frozenset[str],
    now: float,
    lifetime: int,
) -> dict[str, object]:
    """A v2.0 ID token's claims as Entra issues them to a web app."""
    iat = int(now)
    claims: dict[str, object] = {
        "aud": app.client_id,
        "iss": f"{issuer_base}/{tenant_id}/v2.0",
        "iat": iat,
        "nbf": iat,
        "exp": iat + lifetime,
        "aio": _uti(),
        "name": user.name,
        "oid": user.oid,
        "preferred_username": user.preferred_username,
        "rh": "0.emulator.",
        "sid": str(uuid.uuid5(_NAMESPACE, f"sid|{user.oid}|{iat}")),
        "sub": pairwise_sub(user.oid, app.client_id),
        "tid": tenant_id,
        "uti": _uti(),
        "ver": "2.0",
    }
    if nonce is not None:
        claims["nonce"] = nonce
    if tenant_id == CONSUMERS_TENANT_ID:
        claims["idp"] = "https://sts.windows.net/" + CONSUMERS_TENANT_ID + "/"
    if user.wids:
        claims["wids"] = list(user.wids)
    if "email" in scopes:
        claims["email"] = user.preferred_username
    return claims


def delegated_access_token_claims(
    *,
    app: AppRegistration,
    user: User,
    tenant_id: str,
    scopes: tuple[str, ...],
    now: float,
    lifetime: int,
) -> dict[str, object]:
    """A Microsoft Graph (v1.0-shaped) delegated access token: `scp`, user `oid`."""
    iat = int(now)
    claims: dict[str, object] = {
        "aud": GRAPH_RESOURCE,
        "iss": f"https://sts.windows.net/{tenant_id}/",
        "iat": iat,
        "nbf": iat,
        "exp": iat + lifetime,
        "app_displayname": app.display_name,
        "appid": app.client_id,
        "azp": app.client_id,
        "appidacr": "1",
        "idtyp": "user",
        "name": user.name,
        "oid": user.oid,
        "scp": " ".join(scopes),
        "sub": pairwise_sub(user.oid, app.client_id),
        "tid": tenant_id,
        "unique_name": user.preferred_username,
        "upn": user.preferred_username,
        "uti": _uti(),
        "ver": "1.0",
    }
    if user.wids:
        claims["wids"] = list(user.wids)
    return claims


def app_access_token_claims(
    *,
    app: AppRegistration,
    tenant_id: str,
    roles: tuple[str, ...],
    now: float,
    lifetime: int,
) -> dict[str, object]:
    """A Microsoft Graph app-only access token: `roles` are those consented in `tenant_id`."""
    iat = int(now)
    sp_oid = service_principal_oid(tenant_id, app.client_id)
    claims: dict[str, object] = {
        "aud": GRAPH_RESOURCE,
        "iss": f"https://sts.windows.net/{tenant_id}/",
        "iat": iat,
        "nbf": iat,
        "exp": iat + lifetime,
        "app_displayname": app.display_name,
        "appid": app.client_id,
        "azp": app.client_id,
        "appidacr": "1",
        "idp": f"https://sts.windows.net/{tenant_id}/",
        "idtyp": "app",
        "oid": sp_oid,
        "sub": sp_oid,
        "tid": tenant_id,
        "uti": _uti(),
        "ver": "1.0",
    }
    # Entra omits `roles` entirely when the service principal holds none.
    if roles:
        claims["roles"] = list(roles)
    return claims
