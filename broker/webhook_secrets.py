"""Webhook signing secrets: one or more live ``whsec_`` secrets per provider.

A provider rotates its secret with an overlap: during it every delivery carries
one signature per live secret (see :mod:`broker.webhook_signatures`).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, insert, or_, select, update

from broker import errors
from broker.db import provider_webhook_secrets, providers
from broker.ids import new_id
from broker.providers import get_provider
from broker.runtime import Runtime

SECRET_PREFIX = "whsec_"  # noqa: S105 - the scheme's prefix, not a secret
MAX_OVERLAP_SECONDS = 30 * 86400


@dataclass(frozen=True)
class WebhookSecret:
    """One signing secret of a provider; the secret itself is kept out of ``repr``."""

    secret_id: str
    created_at: datetime
    expires_at: datetime | None
    secret: str = field(repr=False)


def rotate_webhook_secret(runtime: Runtime, provider_id: str, overlap_seconds: int) -> str:
    """Create a new signing secret and return it (the only time it is shown).

    The provider's current secrets keep signing for ``overlap_seconds`` (0 ends
    them at once; one already due to expire sooner keeps its expiry). During
    the overlap every delivery carries one signature per live secret.
    """
    if not 0 <= overlap_seconds <= MAX_OVERLAP_SECONDS:
        raise errors.InvalidRequest(f"overlap must be between 0 and {MAX_OVERLAP_SECONDS} seconds")
    provider = get_provider(runtime, provider_id)
    now = runtime.now()
    cutoff = now + timedelta(seconds=overlap_seconds)
    secrets_table = provider_webhook_secrets.c
    with runtime.engine.begin() as connection:
        _lock_provider(connection, provider.provider_id)
        connection.execute(
            update(provider_webhook_secrets)
            .where(
                secrets_table.provider_id == provider.provider_id,
                or_(secrets_table.expires_at.is_(None), secrets_table.expires_at > cutoff),
            )
            .values(expires_at=cutoff)
        )
        return _insert_secret(runtime, connection, provider.provider_id, now)


def ensure_webhook_secret(runtime: Runtime, provider_id: str) -> str | None:
    """Create a signing secret if the provider has no live one; return it, else ``None``.

    For the CLI to print once when a webhook URL is first set.
    """
    provider = get_provider(runtime, provider_id)
    now = runtime.now()
    with runtime.engine.begin() as connection:
        _lock_provider(connection, provider.provider_id)
        if live_secrets_at(connection, provider.provider_id, now):
            return None
        return _insert_secret(runtime, connection, provider.provider_id, now)


def live_secrets(runtime: Runtime, provider_id: str) -> list[WebhookSecret]:
    """The provider's unexpired signing secrets, newest first (empty for an unknown id)."""
    with runtime.engine.connect() as connection:
        return live_secrets_at(connection, provider_id, runtime.now())


def _new_secret(runtime: Runtime) -> str:
    return SECRET_PREFIX + base64.b64encode(runtime.random_bytes(32)).decode("ascii")


def _insert_secret(
    runtime: Runtime, connection: Connection, provider_id: str, now: datetime
) -> str:
    secret = _new_secret(runtime)
    connection.execute(
        insert(provider_webhook_secrets).values(
            id=new_id(runtime, "whs", now),
            provider_id=provider_id,
            secret=secret,
            created_at=now,
        )
    )
    return secret


def live_secrets_at(connection: Connection, provider_id: str, now: datetime) -> list[WebhookSecret]:
    """:func:`live_secrets` inside the caller's transaction, at ``now``."""
    table = provider_webhook_secrets.c
    rows = connection.execute(
        select(provider_webhook_secrets)
        .where(
            table.provider_id == provider_id,
            or_(table.expires_at.is_(None), table.expires_at > now),
        )
        .order_by(table.id.desc())
    ).mappings()
    return [
        WebhookSecret(
            secret_id=row["id"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            secret=row["secret"],
        )
        for row in rows
    ]


def _lock_provider(connection: Connection, provider_id: str) -> None:
    # A no-op write takes the provider's row lock (PostgreSQL) or the write
    # lock (SQLite) first, so concurrent rotations of one provider serialise.
    connection.execute(
        update(providers)
        .where(providers.c.id == provider_id)
        .values(webhook_url=providers.c.webhook_url)
    )
