"""Events and the audit trail, for reconciliation."""

from __future__ import annotations

from datetime import datetime

from broker import events, webhooks
from handlers import views
from handlers.context import current_runtime


def list_events(
    user: str,
    limit: int = 20,
    cursor: str | None = None,
    type_: str | None = None,
    enterprise_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> views.Reply:
    """``listEvents``."""
    page = events.list_events(
        current_runtime(),
        user,
        limit=limit,
        cursor=cursor,
        event_type=type_,
        enterprise_id=enterprise_id,
        since=_time(since),
        until=_time(until),
    )
    return views.reply({"items": list(page.items), "nextCursor": page.next_cursor})


def get_event(event_id: str, user: str) -> views.Reply:
    """``getEvent``."""
    return views.reply(events.get_event(current_runtime(), user, event_id))


def list_audit_entries(
    user: str,
    limit: int = 20,
    cursor: str | None = None,
    enterprise_id: str | None = None,
    action_item_id: str | None = None,
) -> views.Reply:
    """``listAuditEntries``."""
    page = events.list_audit(
        current_runtime(),
        user,
        limit=limit,
        cursor=cursor,
        enterprise_id=enterprise_id,
        action_item_id=action_item_id,
    )
    return views.reply(
        {"items": [views.audit_entry(e) for e in page.items], "nextCursor": page.next_cursor}
    )


def _time(value: str | None) -> datetime | None:
    # Connexion checked the date-time format; fromisoformat in 3.11 reads RFC 3339.
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def list_delivery_attempts(event_id: str, user: str) -> views.Reply:
    """``listDeliveryAttempts``."""
    delivery, attempts = webhooks.delivery_report(current_runtime(), user, event_id)
    report: dict[str, object] = {"attempts": [views.attempt(a) for a in attempts]}
    if delivery is not None:
        report["delivery"] = views.delivery(delivery)
    return views.reply(report)


def redeliver_event(event_id: str, user: str) -> views.Reply:
    """``redeliverEvent``."""
    queued = webhooks.redeliver(current_runtime(), user, event_id)
    return views.reply(views.delivery(queued), 202)
