"""The action catalog, read-only."""

from __future__ import annotations

from handlers import views
from handlers.context import current_runtime


def list_action_types(user: str) -> views.Reply:
    """``listActionTypes``."""
    return views.reply({"items": [views.action_type(s) for s in current_runtime().catalog.actions]})
