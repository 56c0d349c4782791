"""Liveness and readiness."""

from __future__ import annotations

from broker.health import check_database
from handlers import views
from handlers.context import current_runtime


def get_health() -> views.Reply:
    """``getHealth``: 200, or a 503 problem raised by ``check_database``."""
    check_database(current_runtime())
    return views.reply({"status": "ok", "database": "ok"})
