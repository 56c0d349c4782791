"""Events (the webhook outbox) and the audit trail, written inside the caller's transaction.

An event exists exactly when the change it describes was committed: both are
written by the same transaction. Webhook delivery and the events API read the
``events`` table; nothing else produces outcomes for providers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from broker import errors
from broker.db import audit_log, events
from broker.event_sealing import event_document, seal_event_tokens
from broker.ids import decode_cursor, encode_cursor, looks_like_id, new_id
from broker.runtime import Runtime
from broker.timestamps import rfc3339_parameter

EVENT_TYPES = (
    "actionItem.completed",
    "actionItem.failed",
    "actionItem.pending",
    "enterprise.registered",
    "consent.granted",
    "consent.failed",
    "consent.pending",
    "teamsApps.deployed",
)
# Built once: run with a parameter dict, an insert costs no statement building per row.
_INSERT_EVENT = insert(events)
_INSERT_AUDIT = insert(audit_log)


def emit_event(
    connection: Connection,
    runtime: Runtime,
    provider_id: str,
    event_type: str,
    data: dict[str, Any],
) -> str:
    """Write one event (Standard Webhooks shape: ``type``, ``timestamp``, ``data``).

    Token fields of ``data`` are sealed apart from the stored document: the
    events API never returns them and delivery erases them (see
    :mod:`broker.event_sealing`).
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type}")
    now = runtime.now()
    event_id = new_id(runtime, "evt", now)
    clear, sealed = seal_event_tokens(runtime, event_id, data)
    document = {
        "eventId": event_id,
        "type": event_type,
        "timestamp": now.isoformat().replace("+00:00", "Z"),
        "data": clear,
    }
    connection.execute(
        _INSERT_EVENT,
        {
            "id": event_id,
            "provider_id": provider_id,
            "type": event_type,
            "enterprise_id": data.get("enterpriseId"),
            "action_item_id": data.get("actionItemId"),
            "payload": json.dumps(document),
            "sealed_tokens": sealed,
            "created_at": now,
        },
    )
    return event_id


def record_audit(
    connection: Connection,
    runtime: Runtime,
    provider_id: str,
    actor: str,
    action: str,
    *,
    enterprise_id: str | None = None,
    action_item_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one line to the provider's audit trail."""
    now = runtime.now()
    connection.execute(
        _INSERT_AUDIT,
        {
            "id": new_id(runtime, "aud", now),
            "provider_id": provider_id,
            "actor": actor,
            "action": action,
            "enterprise_id": enterprise_id,
            "action_item_id": action_item_id,
            "details": json.dumps(details or {}),
            "created_at": now,
        },
    )


@dataclass(frozen=True)
class EventPage:
    """One page of events (their stored JSON documents) and the next cursor."""

    items: tuple[dict[str, Any], ...]
    next_cursor: str | None


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit trail."""

    audit_id: str
    actor: str
    action: str
    enterprise_id: str | None
    action_item_id: str | None
    details: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class AuditPage:
    """One page of the audit trail."""

    items: tuple[AuditEntry, ...]
    next_cursor: str | None


def list_events(
    runtime: Runtime,
    provider_id: str,
    *,
    limit: int,
    cursor: str | None = None,
    event_type: str | None = None,
    enterprise_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> EventPage:
    """The provider's events, oldest first, for reconciliation after missed webhooks.

    ``since`` and ``until`` are RFC 3339 times (any case of ``T``/``Z``, any
    offset); anything else is :class:`errors.InvalidRequest`.
    """
    query = select(events.c.id, events.c.payload).where(events.c.provider_id == provider_id)
    if cursor is not None:
        query = query.where(events.c.id > decode_cursor(cursor, "evt"))
    if event_type is not None:
        query = query.where(events.c.type == event_type)
    if enterprise_id is not None:
        query = query.where(events.c.enterprise_id == enterprise_id)
    if since:
        query = query.where(events.c.created_at >= rfc3339_parameter("since", since))
    if until:
        query = query.where(events.c.created_at < rfc3339_parameter("until", until))
    with runtime.engine.connect() as connection:
        rows = connection.execute(query.order_by(events.c.id).limit(limit + 1)).all()
    items = tuple(event_document(row.payload) for row in rows[:limit])
    return EventPage(items, encode_cursor(rows[limit - 1].id) if len(rows) > limit else None)


def get_event(runtime: Runtime, provider_id: str, event_id: str) -> dict[str, Any]:
    """One of the provider's events; another provider's is not found."""
    if not looks_like_id(event_id, "evt"):
        raise errors.EventNotFound(f"no event {event_id!r}")
    with runtime.engine.connect() as connection:
        payload = connection.execute(
            select(events.c.payload).where(
                events.c.id == event_id, events.c.provider_id == provider_id
            )
        ).scalar_one_or_none()
    if payload is None:
        raise errors.EventNotFound(f"no event {event_id!r}")
    return event_document(payload)


def list_audit(
    runtime: Runtime,
    provider_id: str,
    *,
    limit: int,
    cursor: str | None = None,
    enterprise_id: str | None = None,
    action_item_id: str | None = None,
) -> AuditPage:
    """The provider's audit trail, oldest first."""
    query = select(audit_log).where(audit_log.c.provider_id == provider_id)
    if cursor is not None:
        query = query.where(audit_log.c.id > decode_cursor(cursor, "aud"))
    if enterprise_id is not None:
        query = query.where(audit_log.c.enterprise_id == enterprise_id)
    if action_item_id is not None:
        query = query.where(audit_log.c.action_item_id == action_item_id)
    with runtime.engine.connect() as connection:
        rows = connection.execute(query.order_by(audit_log.c.id).limit(limit + 1)).mappings().all()
    items = tuple(
        AuditEntry(
            audit_id=row["id"],
            actor=row["actor"],
            action=row["action"],
            enterprise_id=row["enterprise_id"],
            action_item_id=row["action_item_id"],
            details=json.loads(row["details"]),
            created_at=row["created_at"],
        )
        for row in rows[:limit]
    )
    return AuditPage(items, encode_cursor(rows[limit - 1]["id"]) if len(rows) > limit else None)
