"""Events and the audit trail, for reconciliation."""

from __future__ import annotations

from broker import events, webhook_queue
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
        since=since,
        until=until,
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


def list_delivery_attempts(event_id: str, user: str) -> views.Reply:
    """``listDeliveryAttempts``."""
    delivery, attempts = webhook_queue.delivery_report(current_runtime(), user, event_id)
    report: dict[str, object] = {"attempts": [views.attempt(a) for a in attempts]}
    if delivery is not None:
        report["delivery"] = views.delivery(delivery)
    return views.reply(report)


def redeliver_event(event_id: str, user: str) -> views.Reply:
    """``redeliverEvent``."""
    queued = webhook_queue.redeliver(current_runtime(), user, event_id)
    return views.reply(views.delivery(queued), 202)


def redeliver_pending_events(
    user: str, since: str | None = None, until: str | None = None, failed: bool = True
) -> views.Reply:
    """``redeliverPendingEvents``."""
    count = webhook_queue.redeliver_pending(
        current_runtime(), user, since=since, until=until, include_failed=failed
    )
    return views.reply({"rescheduled": count}, 202)
