"""Retention: how long rows that grow with traffic are kept, enforced by the worker.

Each table gets a setting in days (``CTT_RETENTION_*_DAYS``). Sealed event
tokens get no retention of their own: they are erased as soon as the event is
delivered or can no longer be (see :mod:`broker.event_sealing`); this sweep
also catches events that were never queued for delivery.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, exists, or_, select, update

from broker.db import audit_log, events, flows, webhook_attempts, webhook_deliveries
from broker.runtime import Runtime
from broker.webhook_queue import DELIVERED, ENQUEUE_MAX_AGE_SECONDS, FAILED


@dataclass(frozen=True)
class RetentionPass:
    """Rows each table lost in one :func:`enforce_retention` pass."""

    events: int = 0
    audit: int = 0
    attempts: int = 0
    flows: int = 0
    tokens_erased: int = 0

    @property
    def total(self) -> int:
        """Every row removed or blanked."""
        return self.events + self.audit + self.attempts + self.flows + self.tokens_erased


def enforce_retention(runtime: Runtime) -> RetentionPass:
    """Delete rows older than their retention and erase tokens no delivery will need."""
    settings = runtime.settings
    now = runtime.now()

    def cutoff(days: int) -> object:
        return now - timedelta(days=days)

    d = webhook_deliveries.c
    with runtime.engine.begin() as connection:
        finished = select(d.event_id).where(d.status.in_((DELIVERED, FAILED)))
        unqueued_and_stale = (~exists().where(d.event_id == events.c.id)) & (
            events.c.created_at < now - timedelta(seconds=ENQUEUE_MAX_AGE_SECONDS)
        )
        erased = connection.execute(
            update(events)
            .where(
                events.c.sealed_tokens.is_not(None),
                or_(events.c.id.in_(finished.scalar_subquery()), unqueued_and_stale),
            )
            .values(sealed_tokens=None)
        ).rowcount
        attempts = connection.execute(
            delete(webhook_attempts).where(
                webhook_attempts.c.started_at < cutoff(settings.retention_attempts_days)
            )
        ).rowcount
        # An old event goes with its delivery and attempts, unless it is still
        # being retried (a redelivery can restart an old event's round).
        old_events = select(events.c.id).where(
            events.c.created_at < cutoff(settings.retention_events_days),
            ~exists().where(d.event_id == events.c.id, d.status.not_in((DELIVERED, FAILED))),
        )
        old_ids = old_events.scalar_subquery()
        connection.execute(delete(webhook_attempts).where(webhook_attempts.c.event_id.in_(old_ids)))
        connection.execute(delete(webhook_deliveries).where(d.event_id.in_(old_ids)))
        removed_events = connection.execute(delete(events).where(events.c.id.in_(old_ids))).rowcount
        audit = connection.execute(
            delete(audit_log).where(audit_log.c.created_at < cutoff(settings.retention_audit_days))
        ).rowcount
        dropped_flows = connection.execute(
            delete(flows).where(flows.c.created_at < cutoff(settings.retention_flows_days))
        ).rowcount
    return RetentionPass(
        events=int(removed_events),
        audit=int(audit),
        attempts=int(attempts),
        flows=int(dropped_flows),
        tokens_erased=int(erased),
    )
