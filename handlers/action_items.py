"""Action item operations, including the long-standing ``getActionItemUrl``."""

from __future__ import annotations

from typing import Any

from broker import action_items
from handlers import views
from handlers.context import current_runtime


def get_action_item_url(body: dict[str, Any], user: str) -> views.Reply:
    """``getActionItemUrl``: create an action item and return its link."""
    issued = action_items.create_action_item(
        current_runtime(),
        user,
        action_type=body["actionType"],
        enterprise_id=body["enterpriseId"],
        callback_url=body["callbackUrl"],
        state=body.get("state"),
        expires_in=body.get("expiresInSeconds", action_items.DEFAULT_LIFETIME),
        result_delivery=body.get("resultDelivery", "redirect"),
        reregister=body.get("reregister", False),
        teams_app_package_ids=body.get("teamsAppPackageIds"),
    )
    location = f"/actionItems/{issued.item.action_item_id}"
    return views.reply(views.issued_action_item(issued), 201, location)


def get_action_item(action_item_id: str, user: str) -> views.Reply:
    """``getActionItem``."""
    item = action_items.get_action_item(current_runtime(), user, action_item_id)
    return views.reply(views.action_item(item))


def revoke_action_item(action_item_id: str, user: str) -> views.Reply:
    """``revokeActionItem``."""
    item = action_items.revoke_action_item(current_runtime(), user, action_item_id)
    return views.reply(views.action_item(item))


def list_action_items(
    enterprise_id: str, user: str, limit: int = 20, cursor: str | None = None
) -> views.Reply:
    """``listActionItems``."""
    page = action_items.list_action_items(
        current_runtime(), user, enterprise_id, limit=limit, cursor=cursor
    )
    items = [views.action_item(i) for i in page.items]
    return views.reply({"items": items, "nextCursor": page.next_cursor})
