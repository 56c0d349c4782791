"""Providers, their API keys and their allowed callback URLs.

An API key is ``ctt_sk_`` plus 256 random bits (base64url). Only its SHA-256
is stored, so a database leak discloses no usable key; the key is shown once,
at creation or rotation. Because keys are long random strings, a plain hash
is the right tool (a slow password hash would only slow every request).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    Connection,
    RowMapping,
    and_,
    bindparam,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from broker import errors
from broker.callbacks import normalize_allowed_callback
from broker.db import api_keys, provider_callbacks, provider_webhook_secrets, providers
from broker.destinations import check_webhook_url
from broker.events import record_audit
from broker.ids import looks_like_id, new_id
from broker.runtime import Runtime
from broker.tokens import digest, random_token

KEY_PREFIX = "ctt_sk_"
_KEY_SHAPE = re.compile(r"^ctt_sk_[A-Za-z0-9_-]{43}$")
_NAME_SHAPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")
# Any printable text: no C0/C1 controls or DEL, no space at either end.
_DISPLAY_NAME = re.compile(
    r"^[^\x00-\x20\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]{0,98}[^\x00-\x20\x7f-\x9f])?$"
)


@dataclass(frozen=True)
class ApiKeyInfo:
    """An API key as listed: never the key itself."""

    key_id: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def is_active(self, now: datetime) -> bool:
        """Neither revoked nor past its overlap expiry."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True)
class Provider:
    """A service provider and its configuration."""

    provider_id: str
    name: str
    development: bool
    webhook_url: str | None
    share_refresh_token: bool
    callback_urls: tuple[str, ...]
    keys: tuple[ApiKeyInfo, ...]
    created_at: datetime
    branding: Branding | None = None


@dataclass(frozen=True)
class Branding:
    """How the broker's pages name the provider and lead the admin back to its portal."""

    display_name: str | None
    portal_url: str | None
    logo_url: str | None


@dataclass(frozen=True)
class IssuedKey:
    """A freshly issued key: the only moment the secret exists outside the caller."""

    key_id: str
    api_key: str = ""

    def __repr__(self) -> str:
        return f"IssuedKey(key_id={self.key_id!r}, api_key='***')"


# Built once and run with parameters: every API request runs these.
_NOW = bindparam("now", type_=api_keys.c.expires_at.type)
_PROVIDER_BY_KEY = select(api_keys.c.provider_id).where(
    api_keys.c.key_hash == bindparam("key_hash"),
    api_keys.c.revoked_at.is_(None),
    or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > _NOW),
)
_CALLBACK_RULES = (
    select(providers.c.development, provider_callbacks.c.url)
    .select_from(providers.outerjoin(provider_callbacks))
    .where(providers.c.id == bindparam("provider_id"))
    .order_by(provider_callbacks.c.id)
)


# get_provider's queries, built once: a statement built per call costs more than the
# query itself on SQLite (the join's condition is worked out again each time).
_PROVIDER_ROWS = select(providers, provider_callbacks.c.url.label("callback_url")).select_from(
    providers.outerjoin(provider_callbacks)
)
_PROVIDER_BY_ID = _PROVIDER_ROWS.where(providers.c.id == bindparam("ref")).order_by(
    provider_callbacks.c.id
)
_PROVIDER_BY_NAME = _PROVIDER_ROWS.where(providers.c.name == bindparam("ref")).order_by(
    provider_callbacks.c.id
)
_PROVIDER_KEYS = (
    select(api_keys)
    .where(api_keys.c.provider_id == bindparam("provider_id"))
    .order_by(api_keys.c.id)
)


def authenticate(runtime: Runtime, api_key: str) -> str:
    """Return the provider id owning ``api_key``; raise :class:`errors.Unauthenticated`.

    Malformed keys are refused without touching the database.
    """
    if not _KEY_SHAPE.match(api_key):
        raise errors.Unauthenticated("API key is missing or malformed")
    with runtime.engine.connect() as connection:
        provider_id = connection.execute(
            _PROVIDER_BY_KEY, {"key_hash": digest(api_key), "now": runtime.now()}
        ).scalar_one_or_none()
    if provider_id is None:
        raise errors.Unauthenticated("API key is unknown, expired or revoked")
    return str(provider_id)


def create_provider(
    runtime: Runtime,
    name: str,
    *,
    development: bool = False,
    callback_urls: tuple[str, ...] = (),
    webhook_url: str | None = None,
    share_refresh_token: bool = False,
) -> tuple[Provider, IssuedKey]:
    """Create a provider with its first API key."""
    if not _NAME_SHAPE.match(name):
        raise errors.InvalidRequest(
            "provider name must be 1-100 letters, digits, spaces, '.', '_' or '-'"
        )
    if development and runtime.settings.mode == "production":
        raise errors.DevelopmentProviderInProduction(
            "development providers (http on loopback) are refused in production mode"
        )
    normalized = [
        normalize_allowed_callback(url, development=development).url for url in callback_urls
    ]
    webhook = _checked_webhook(runtime, webhook_url, development)
    now = runtime.now()
    provider_id = new_id(runtime, "prv", now)
    with runtime.engine.begin() as connection:
        try:
            connection.execute(
                insert(providers).values(
                    id=provider_id,
                    name=name,
                    development=development,
                    webhook_url=webhook,
                    share_refresh_token=share_refresh_token,
                    created_at=now,
                )
            )
        except IntegrityError:
            raise errors.ProviderNameTaken(f"a provider named {name!r} already exists") from None
        for url in dict.fromkeys(normalized):
            connection.execute(
                insert(provider_callbacks).values(provider_id=provider_id, url=url, created_at=now)
            )
        issued = _insert_key(runtime, connection, provider_id, now)
    return get_provider(runtime, provider_id), issued


@dataclass(frozen=True)
class CallbackRules:
    """What a callback URL is checked against: the allow-list and the loopback allowance."""

    development: bool
    callback_urls: tuple[str, ...]


def callback_rules(connection: Connection, runtime: Runtime, provider_id: str) -> CallbackRules:
    """The provider's callback allow-list, read in one query on the caller's connection."""
    rows = connection.execute(_CALLBACK_RULES, {"provider_id": provider_id}).all()
    if not rows:
        raise errors.ProviderNotFound(f"no provider {provider_id!r}")
    return CallbackRules(
        # The same rule as get_provider: no loopback allowances in production.
        development=rows[0].development and runtime.settings.mode != "production",
        callback_urls=tuple(row.url for row in rows if row.url is not None),
    )


def get_provider(runtime: Runtime, ref: str, *, with_keys: bool = True) -> Provider:
    """A provider by id or by name; :class:`errors.ProviderNotFound` otherwise.

    ``with_keys=False`` leaves ``keys`` empty and spares the query, for the admin's
    round trip, which needs the callbacks and settings but never the keys.
    """
    query = _PROVIDER_BY_ID if looks_like_id(ref, "prv") else _PROVIDER_BY_NAME
    with runtime.engine.connect() as connection:
        rows = connection.execute(query, {"ref": ref}).mappings().all()
        if not rows:
            raise errors.ProviderNotFound(f"no provider {ref!r}")
        row = rows[0]
        keys = (
            connection.execute(_PROVIDER_KEYS, {"provider_id": row["id"]}).mappings().all()
            if with_keys
            else []
        )
    return Provider(
        provider_id=row["id"],
        name=row["name"],
        # A development provider left over from a sandbox loses its loopback
        # allowances in production: its callbacks and webhooks are refused.
        development=row["development"] and runtime.settings.mode != "production",
        webhook_url=row["webhook_url"],
        share_refresh_token=row["share_refresh_token"],
        callback_urls=tuple(r["callback_url"] for r in rows if r["callback_url"] is not None),
        keys=tuple(
            ApiKeyInfo(
                key_id=key["id"],
                prefix=key["prefix"],
                created_at=key["created_at"],
                expires_at=key["expires_at"],
                revoked_at=key["revoked_at"],
            )
            for key in keys
        ),
        created_at=row["created_at"],
        branding=_branding(row),
    )


def _branding(row: RowMapping) -> Branding | None:
    if not (row["display_name"] or row["portal_url"] or row["logo_url"]):
        return None
    return Branding(row["display_name"], row["portal_url"], row["logo_url"])


def branding_of(runtime: Runtime, provider_id: str) -> Branding | None:
    """The provider's branding for the admin's pages, or None when it has none."""
    with runtime.engine.connect() as connection:
        row = (
            connection.execute(
                select(
                    providers.c.display_name, providers.c.portal_url, providers.c.logo_url
                ).where(providers.c.id == provider_id)
            )
            .mappings()
            .first()
        )
    return None if row is None else _branding(row)


def set_branding(
    runtime: Runtime,
    ref: str,
    *,
    display_name: str | None,
    portal_url: str | None,
    logo_url: str | None,
) -> Branding | None:
    """Set (None or "" clears) the provider's display name, portal URL and logo URL.

    Both URLs go into the admin's pages, as a link and as an ``<img>``: they are
    held to the webhook destination rules in production form (https only, no
    loopback, no private or reserved literal address, none of the callback
    tricks), whatever the provider's development flag.
    """
    provider = get_provider(runtime, ref)
    name = (display_name or "").strip() or None
    if name is not None and not _DISPLAY_NAME.match(name):
        raise errors.InvalidRequest(
            "display name must be 1-100 characters, without control characters"
        )
    portal = _branding_url(portal_url)
    logo = _branding_url(logo_url)
    with runtime.engine.begin() as connection:
        connection.execute(
            update(providers)
            .where(providers.c.id == provider.provider_id)
            .values(display_name=name, portal_url=portal, logo_url=logo)
        )
        record_audit(
            connection,
            runtime,
            provider.provider_id,
            "operator",
            "provider.branding",
            details={"displayName": name, "portalUrl": portal, "logoUrl": logo},
        )
    return branding_of(runtime, provider.provider_id)


def _branding_url(raw: str | None) -> str | None:
    if not raw:
        return None
    checked = check_webhook_url(raw, development=False, production=True)
    if not checked.startswith("https://"):
        raise errors.CallbackUrlInsecureHttp("branding URLs must use https")
    if any(character in checked for character in ";,'\"<>"):
        # The logo's URL becomes a Content-Security-Policy source: nothing that ends one.
        raise errors.CallbackUrlForbiddenCharacters("branding URLs must not contain ; , ' \" < >")
    return checked


def list_providers(runtime: Runtime) -> list[Provider]:
    """Every provider, oldest first."""
    with runtime.engine.connect() as connection:
        ids = connection.execute(select(providers.c.id).order_by(providers.c.id)).scalars().all()
    return [get_provider(runtime, provider_id) for provider_id in ids]


def rotate_key(runtime: Runtime, ref: str, *, overlap_seconds: int) -> IssuedKey:
    """Issue a new key; the provider's current keys stay valid for ``overlap_seconds``.

    An overlap of 0 ends the old keys at once. Keys already set to expire
    sooner keep their earlier expiry.
    """
    if not 0 <= overlap_seconds <= 30 * 86400:
        raise errors.InvalidRequest("overlap must be between 0 and 2592000 seconds")
    provider = get_provider(runtime, ref)
    now = runtime.now()
    cutoff = now + timedelta(seconds=overlap_seconds)
    with runtime.engine.begin() as connection:
        connection.execute(
            update(api_keys)
            .where(
                api_keys.c.provider_id == provider.provider_id,
                api_keys.c.revoked_at.is_(None),
                or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > cutoff),
            )
            .values(expires_at=cutoff)
        )
        issued = _insert_key(runtime, connection, provider.provider_id, now)
        record_audit(
            connection,
            runtime,
            provider.provider_id,
            "operator",
            "apiKey.rotated",
            details={"newKeyId": issued.key_id, "overlapSeconds": overlap_seconds},
        )
        return issued


def revoke_key(runtime: Runtime, ref: str, key_id: str) -> None:
    """Revoke one key at once (idempotent for an already revoked key)."""
    provider = get_provider(runtime, ref)
    with runtime.engine.begin() as connection:
        result = connection.execute(
            update(api_keys)
            .where(and_(api_keys.c.id == key_id, api_keys.c.provider_id == provider.provider_id))
            .values(revoked_at=runtime.now())
            .where(api_keys.c.revoked_at.is_(None))
        )
        if result.rowcount == 0:
            exists = connection.execute(
                select(api_keys.c.id).where(
                    api_keys.c.id == key_id, api_keys.c.provider_id == provider.provider_id
                )
            ).first()
            if exists is None:
                raise errors.ApiKeyNotFound(f"provider {provider.name!r} has no key {key_id!r}")
        else:
            record_audit(
                connection,
                runtime,
                provider.provider_id,
                "operator",
                "apiKey.revoked",
                details={"keyId": key_id},
            )


def add_callback(runtime: Runtime, ref: str, url: str) -> str:
    """Allow ``url`` as a callback for the provider; returns its normalised form."""
    provider = get_provider(runtime, ref)
    normalized = normalize_allowed_callback(url, development=provider.development).url
    if normalized not in provider.callback_urls:
        with runtime.engine.begin() as connection:
            connection.execute(
                insert(provider_callbacks).values(
                    provider_id=provider.provider_id, url=normalized, created_at=runtime.now()
                )
            )
    return normalized


def remove_callback(runtime: Runtime, ref: str, url: str) -> None:
    """Stop allowing ``url``; links already issued for it will fail at redirect time."""
    provider = get_provider(runtime, ref)
    try:
        normalized = normalize_allowed_callback(url, development=provider.development).url
    except errors.CallbackUrlRejected:
        normalized = url
    with runtime.engine.begin() as connection:
        result = connection.execute(
            delete(provider_callbacks).where(
                provider_callbacks.c.provider_id == provider.provider_id,
                provider_callbacks.c.url == normalized,
            )
        )
    if result.rowcount == 0:
        raise errors.NotFound(f"{url!r} is not an allowed callback of {provider.name!r}")


def set_webhook_url(
    runtime: Runtime, ref: str, url: str | None, include_tokens: bool = False
) -> None:
    """Set or clear the provider's webhook URL (checked like a callback URL).

    ``include_tokens`` puts the MSAL result into sign-in events.
    """
    provider = get_provider(runtime, ref)
    webhook = _checked_webhook(runtime, url, provider.development)
    with runtime.engine.begin() as connection:
        connection.execute(
            update(providers)
            .where(providers.c.id == provider.provider_id)
            .values(webhook_url=webhook, webhook_include_tokens=include_tokens and bool(webhook))
        )


def _checked_webhook(runtime: Runtime, url: str | None, development: bool) -> str | None:
    if url is None:
        return None
    production = runtime.settings.mode == "production"
    return check_webhook_url(url, development=development, production=production)


def _insert_key(
    runtime: Runtime, connection: Connection, provider_id: str, now: datetime
) -> IssuedKey:
    api_key = KEY_PREFIX + random_token(runtime.random_bytes)
    key_id = new_id(runtime, "key", now)
    connection.execute(
        insert(api_keys).values(
            id=key_id,
            provider_id=provider_id,
            key_hash=digest(api_key),
            prefix=api_key[:11],
            created_at=now,
        )
    )
    return IssuedKey(key_id=key_id, api_key=api_key)


@dataclass(frozen=True)
class SecretInfo:
    """A webhook signing secret as described to its provider: its id and lifetime only."""

    secret_id: str
    created_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True)
class ProviderProfile:
    """What a provider may read about itself (``GET /provider``): never a secret."""

    provider: Provider
    webhook_include_tokens: bool
    webhook_secrets: tuple[SecretInfo, ...]


def describe_provider(runtime: Runtime, provider_id: str) -> ProviderProfile:
    """The calling provider's own configuration: callbacks, webhook settings, key ids."""
    provider = get_provider(runtime, provider_id)
    with runtime.engine.connect() as connection:
        include_tokens = connection.execute(
            select(providers.c.webhook_include_tokens).where(providers.c.id == provider_id)
        ).scalar_one()
        # Ids and lifetimes only: the secret column is never even read here.
        table = provider_webhook_secrets.c
        secrets = connection.execute(
            select(table.id, table.created_at, table.expires_at)
            .where(
                table.provider_id == provider_id,
                or_(table.expires_at.is_(None), table.expires_at > runtime.now()),
            )
            .order_by(table.id.desc())
        ).all()
    return ProviderProfile(
        provider=provider,
        webhook_include_tokens=bool(include_tokens),
        webhook_secrets=tuple(
            SecretInfo(row.id, row.created_at, row.expires_at) for row in secrets
        ),
    )
