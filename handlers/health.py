"""Liveness and readiness."""

from __future__ import annotations

from broker.health import check_database, check_ready
from handlers import views
from handlers.context import current_runtime


def get_health() -> views.Reply:
    """``getHealth``: 200, or a 503 problem raised by ``check_database``."""
    check_database(current_runtime())
    return views.reply({"status": "ok", "database": "ok"})


def get_health_live() -> views.Reply:
    """``getHealthLive``: the process serves requests; touches nothing else."""
    return views.reply({"status": "ok"})


def get_health_ready() -> views.Reply:
    """``getHealthReady``: 200 when ready for traffic, or a 503 problem saying why not."""
    return views.reply(check_ready(current_runtime()))
