"""Results: the provider's backend redeems a one-time code; the JWKS for form_post."""

from __future__ import annotations

from typing import Any

from broker import outcomes
from handlers import views
from handlers.context import current_runtime


def redeem_result(body: dict[str, Any], user: str) -> views.Reply:
    """``redeemResult``: the outcome behind a ``resultCode``, once."""
    return views.reply(outcomes.redeem_result(current_runtime(), user, body["resultCode"]))


def get_jwks() -> tuple[dict[str, Any], int, dict[str, str]]:
    """``getJwks``: public keys verifying form_post result JWTs (cacheable)."""
    headers = {"Content-Type": "application/json", "Cache-Control": "public, max-age=3600"}
    return current_runtime().credentials.jwks(), 200, headers
