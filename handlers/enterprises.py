"""Enterprise operations."""

from __future__ import annotations

from typing import Any

from broker import enterprises
from handlers import views
from handlers.context import current_runtime


def create_enterprise(body: dict[str, Any], user: str) -> views.Reply:
    """``createEnterprise``."""
    created = enterprises.create_enterprise(
        current_runtime(), user, name=body["name"], external_id=body["externalId"]
    )
    return views.reply(views.enterprise(created), 201, f"/enterprises/{created.enterprise_id}")


def list_enterprises(
    user: str, limit: int = 20, cursor: str | None = None, external_id: str | None = None
) -> views.Reply:
    """``listEnterprises``."""
    page = enterprises.list_enterprises(
        current_runtime(), user, limit=limit, cursor=cursor, external_id=external_id
    )
    items = [views.enterprise(e) for e in page.items]
    return views.reply({"items": items, "nextCursor": page.next_cursor})


def get_enterprise(enterprise_id: str, user: str) -> views.Reply:
    """``getEnterprise``."""
    return views.reply(
        views.enterprise(enterprises.get_enterprise(current_runtime(), user, enterprise_id))
    )
