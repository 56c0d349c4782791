"""Enterprises: a provider's customers, their Microsoft tenant and consent status.

A consent's status is derived from facts rather than kept in a column that
can go stale: an outcome recorded for it (granted, failed, or pending while a
grant is being confirmed) and whether an action item asking for it is still
live. Granted wins; a live request makes it pending; then the last outcome.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

from sqlalchemy import (
    Connection,
    RowMapping,
    Select,
    bindparam,
    exists,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from broker import errors
from broker.db import action_items, enterprise_consents, enterprises
from broker.events import record_audit
from broker.ids import decode_cursor, encode_cursor, looks_like_id, new_id
from broker.lifecycle import LIVE_ITEM_STATES
from broker.runtime import Runtime
from broker.teams_apps import EnterpriseTeamsApp, enterprise_teams_apps_state

ConsentState = Literal["notRequested", "pending", "granted", "failed"]


@dataclass(frozen=True)
class ConsentStatus:
    """Where one consent type stands for one enterprise."""

    consent_type: str
    action_type: str
    mandatory: bool
    status: ConsentState
    requested_at: datetime | None
    updated_at: datetime | None
    granted_at: datetime | None
    error_code: str | None


@dataclass(frozen=True)
class Enterprise:
    """An enterprise as its provider sees it."""

    enterprise_id: str
    name: str
    external_id: str
    tenant_id: str | None
    registered_at: datetime | None
    created_at: datetime
    updated_at: datetime
    consents: tuple[ConsentStatus, ...]
    teams_apps: tuple[EnterpriseTeamsApp, ...] = ()

    @property
    def registered(self) -> bool:
        """True once REGISTRATION bound the enterprise to a Microsoft tenant."""
        return self.tenant_id is not None


@dataclass(frozen=True)
class Page:
    """One page of a list and the cursor of the next (None on the last page)."""

    items: tuple[Enterprise, ...]
    next_cursor: str | None


def create_enterprise(
    runtime: Runtime, provider_id: str, *, name: str, external_id: str
) -> Enterprise:
    """Create an enterprise; the external id is unique per provider."""
    _check_text("name", name)
    _check_text("externalId", external_id)
    now = runtime.now()
    enterprise_id = new_id(runtime, "ent", now)
    try:
        with runtime.engine.begin() as connection:
            connection.execute(
                insert(enterprises).values(
                    id=enterprise_id,
                    provider_id=provider_id,
                    name=name,
                    external_id=external_id,
                    created_at=now,
                    updated_at=now,
                )
            )
            record_audit(
                connection,
                runtime,
                provider_id,
                "provider",
                "enterprise.created",
                enterprise_id=enterprise_id,
                details={"externalId": external_id},
            )
    except IntegrityError:
        with runtime.engine.connect() as connection:
            existing = connection.execute(
                select(enterprises.c.id).where(
                    enterprises.c.provider_id == provider_id,
                    enterprises.c.external_id == external_id,
                )
            ).scalar_one_or_none()
        raise errors.EnterpriseExternalIdTaken(
            f"an enterprise with externalId {external_id!r} already exists: {existing}",
            enterprise_id=existing,
        ) from None
    return get_enterprise(runtime, provider_id, enterprise_id)


def get_enterprise(runtime: Runtime, provider_id: str, enterprise_id: str) -> Enterprise:
    """One of the provider's enterprises; another provider's id is simply not found."""
    with runtime.engine.connect() as connection:
        return _load(runtime, connection, provider_id, enterprise_id)


def registered_tenant(connection: Connection, provider_id: str, enterprise_id: str) -> str | None:
    """The enterprise's Microsoft tenant (None before REGISTRATION), without its consents.

    For operations that only need to know whether the enterprise exists for this
    provider and is registered: one indexed read, whatever its history.
    """
    if not looks_like_id(enterprise_id, "ent"):
        raise errors.EnterpriseNotFound(f"no enterprise {enterprise_id!r}")
    row = connection.execute(
        _TENANT, {"enterprise_id": enterprise_id, "provider_id": provider_id}
    ).first()
    if row is None:
        raise errors.EnterpriseNotFound(f"no enterprise {enterprise_id!r}")
    return row.tenant_id  # type: ignore[no-any-return]


# Built once and run with parameters (getActionItemUrl runs it on every call).
_TENANT = select(enterprises.c.tenant_id).where(
    enterprises.c.id == bindparam("enterprise_id"),
    enterprises.c.provider_id == bindparam("provider_id"),
)


def list_enterprises(
    runtime: Runtime,
    provider_id: str,
    *,
    limit: int,
    cursor: str | None = None,
    external_id: str | None = None,
) -> Page:
    """The provider's enterprises, oldest first, ``limit`` at a time (their rows in one read)."""
    query = select(enterprises).where(enterprises.c.provider_id == provider_id)
    if cursor is not None:
        query = query.where(enterprises.c.id > decode_cursor(cursor, "ent"))
    if external_id is not None:
        query = query.where(enterprises.c.external_id == external_id)
    query = query.order_by(enterprises.c.id).limit(limit + 1)
    with runtime.engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
        items = tuple(_from_row(runtime, connection, row) for row in rows[:limit])
    next_cursor = encode_cursor(rows[limit - 1]["id"]) if len(rows) > limit else None
    return Page(items=items, next_cursor=next_cursor)


def record_registration(
    runtime: Runtime, provider_id: str, enterprise_id: str, tenant_id: str
) -> Enterprise:
    """Bind the enterprise to ``tenant_id`` (REGISTRATION's outcome).

    A tenant already bound to another of the provider's enterprises raises
    :class:`errors.Conflict` (enforced by a unique constraint, so two racing
    registrations cannot both win).
    """
    now = runtime.now()
    try:
        with runtime.engine.begin() as connection:
            _load(runtime, connection, provider_id, enterprise_id)
            connection.execute(
                update(enterprises)
                .where(enterprises.c.id == enterprise_id)
                .values(tenant_id=tenant_id, registered_at=now, updated_at=now)
            )
            record_audit(
                connection,
                runtime,
                provider_id,
                "operator",
                "enterprise.registered",
                enterprise_id=enterprise_id,
                details={"tenantId": tenant_id},
            )
    except IntegrityError:
        raise errors.Conflict(
            "this Microsoft tenant is already registered to another of your enterprises"
        ) from None
    return get_enterprise(runtime, provider_id, enterprise_id)


# Built once and run with parameters: an enterprise is read on every GET of it and
# for every item of a list page, and building these statements (the consent summary
# has two subqueries per consent type) cost more CPU than running them.
_ENTERPRISE = select(enterprises).where(
    enterprises.c.id == bindparam("e_enterprise_id"),
    enterprises.c.provider_id == bindparam("e_provider_id"),
)
_OUTCOMES = select(enterprise_consents).where(
    enterprise_consents.c.enterprise_id == bindparam("e_enterprise_id")
)


@lru_cache(maxsize=4)
def _requests_by_type(kinds: tuple[str, ...]) -> Select[Any]:
    """Per consent type of ``kinds``: the newest request's time, then whether one is live.

    Two index seeks per type: the cost does not grow with the enterprise's history.
    Keyed by the catalog's consent types (one catalog per process in practice).
    """
    enterprise_id = bindparam("e_enterprise_id", type_=action_items.c.enterprise_id.type)
    now = bindparam("e_now", type_=action_items.c.expires_at.type)
    return select(
        *(
            select(action_items.c.created_at)
            .where(
                action_items.c.enterprise_id == enterprise_id, action_items.c.consent_type == kind
            )
            .order_by(action_items.c.created_at.desc())
            .limit(1)
            .scalar_subquery()
            for kind in kinds
        ),
        *(
            exists()
            .where(
                action_items.c.enterprise_id == enterprise_id,
                # Spelled out: an IN list is expanded anew at every execution.
                or_(*(action_items.c.status == state for state in LIVE_ITEM_STATES)),
                action_items.c.expires_at > now,
                action_items.c.consent_type == kind,
            )
            .label(f"live_{index}")
            for index, kind in enumerate(kinds)
        ),
    )


def _load(
    runtime: Runtime, connection: Connection, provider_id: str, enterprise_id: str
) -> Enterprise:
    if not looks_like_id(enterprise_id, "ent"):
        raise errors.EnterpriseNotFound(f"no enterprise {enterprise_id!r}")
    row = (
        connection.execute(
            _ENTERPRISE, {"e_enterprise_id": enterprise_id, "e_provider_id": provider_id}
        )
        .mappings()
        .first()
    )
    if row is None:
        raise errors.EnterpriseNotFound(f"no enterprise {enterprise_id!r}")
    return _from_row(runtime, connection, row)


def _from_row(runtime: Runtime, connection: Connection, row: RowMapping) -> Enterprise:
    return Enterprise(
        enterprise_id=row["id"],
        name=row["name"],
        external_id=row["external_id"],
        tenant_id=row["tenant_id"],
        registered_at=row["registered_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        consents=_consents(runtime, connection, row["id"]),
        teams_apps=enterprise_teams_apps_state(connection, row["id"]),
    )


def _consents(
    runtime: Runtime, connection: Connection, enterprise_id: str
) -> tuple[ConsentStatus, ...]:
    outcomes = {
        row["consent_type"]: row
        for row in connection.execute(_OUTCOMES, {"e_enterprise_id": enterprise_id}).mappings()
    }
    kinds = tuple(spec.consent_type for spec in runtime.catalog.actions if spec.consent_type)
    newest_and_live = connection.execute(
        _requests_by_type(kinds), {"e_enterprise_id": enterprise_id, "e_now": runtime.now()}
    ).one()
    requested = dict(zip(kinds, newest_and_live[: len(kinds)], strict=True))
    live = {kind for kind, flag in zip(kinds, newest_and_live[len(kinds) :], strict=True) if flag}
    statuses = []
    for spec in runtime.catalog.actions:
        if spec.consent_type is None:
            continue
        outcome = outcomes.get(spec.consent_type)
        stored = outcome["status"] if outcome else None
        status: ConsentState
        if stored == "granted":
            status = "granted"
        elif spec.consent_type in live or stored == "pending":
            status = "pending"
        elif stored == "failed":
            status = "failed"
        else:
            status = "notRequested"
        requested_at = _as_utc(requested.get(spec.consent_type))
        outcome_at = outcome["updated_at"] if outcome else None
        stamps = [stamp for stamp in (requested_at, outcome_at) if stamp is not None]
        statuses.append(
            ConsentStatus(
                consent_type=spec.consent_type,
                action_type=spec.action_type,
                mandatory=spec.mandatory,
                status=status,
                requested_at=requested_at,
                updated_at=max(stamps) if stamps else None,
                granted_at=outcome["granted_at"] if outcome else None,
                error_code=outcome["error_code"] if outcome and status == "failed" else None,
            )
        )
    return tuple(statuses)


def _as_utc(value: datetime | None) -> datetime | None:
    # Aggregates bypass the column type, so SQLite hands back a naive value or text.
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)

    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# The same rule as the spec's pattern for name and externalId: no C0/C1 control
# characters or DEL, and no space (or control) at either end.
_TEXT = re.compile(r"^[^\x00-\x20\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\x9f])?$")


def _check_text(field: str, value: str) -> None:
    if not 1 <= len(value) <= 200 or not _TEXT.match(value):
        raise errors.InvalidRequest(
            f"{field} must be 1-200 characters, without control characters or a space at either end"
        )
