"""The calling provider's own configuration."""

from __future__ import annotations

from broker import providers
from handlers import views
from handlers.context import current_runtime


def get_provider(user: str) -> views.Reply:
    """``getProvider``: who am I, my callbacks, webhook settings and key ids."""
    return views.reply(views.provider_profile(providers.describe_provider(current_runtime(), user)))
