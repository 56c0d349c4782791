"""The Standard Webhooks signature scheme: signing deliveries and verifying them.

``webhook-signature`` is ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``,
one per live secret. :func:`verify_webhook` is what a receiver (the sandbox
portal) runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

__all__ = ["WebhookVerificationError", "sign_webhook", "verify_webhook"]


def sign_webhook(secrets: Sequence[str], event_id: str, timestamp: int, payload: str) -> str:
    """The ``webhook-signature`` value: one ``v1,<base64>`` per secret, space-separated."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return " ".join(
        Webhook(secret).sign(msg_id=event_id, timestamp=moment, data=payload) for secret in secrets
    )


def verify_webhook(secret: str, body: bytes | str, headers: Mapping[str, str]) -> Any:
    """Verify a delivery as a receiver should and return the parsed JSON body.

    Wraps ``standardwebhooks.Webhook.verify`` (signature in constant time,
    timestamp within 5 minutes of now), which raises ``ValueError`` or
    ``UnicodeDecodeError`` on some malformed input (a non-ASCII or comma-less
    signature, a body that is not UTF-8). Here every bad delivery raises
    :class:`WebhookVerificationError`. A malformed *secret* is the receiver's
    configuration error and is not masked.
    """
    webhook = Webhook(secret)
    try:
        webhook.verify(body, dict(headers), json_parse=False)
        return json.loads(body)
    except WebhookVerificationError:
        raise
    except Exception as exc:
        raise WebhookVerificationError("malformed webhook headers or body") from exc
