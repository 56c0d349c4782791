"""Our webhook signatures and our verifier, as a receiver meets them.

Each vector is a delivery as :mod:`broker.webhook_signatures` signs it, then changed the
way an attacker (or a broken proxy) would. ``verify_webhook`` is the verifier
we recommend: every bad delivery ends in ``WebhookVerificationError`` and never
in another exception. The signature format is checked against the Standard
Webhooks definition computed here by hand, so a receiver in any language can
rely on it whatever library we sign with.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

import pytest

from broker.webhook_secrets import SECRET_PREFIX
from broker.webhook_signatures import WebhookVerificationError, sign_webhook, verify_webhook

SECRET = SECRET_PREFIX + base64.b64encode(bytes(range(32))).decode()
OTHER_SECRET = SECRET_PREFIX + base64.b64encode(bytes(range(32, 64))).decode()
EVENT_ID = "evt_01JDQ5Z8Y6Q1V6W9N3T4R5S6T7"
BODY = json.dumps(
    {
        "id": EVENT_ID,
        "type": "consent.granted",
        "timestamp": "2026-11-27T09:00:00Z",
        "data": {"enterpriseId": "ent_01JDQ5Z8Y6Q1V6W9N3T4R5S6T8", "consentType": "CDR"},
    }
)


def delivery(
    secrets_used: tuple[str, ...] = (SECRET,), *, body: str = BODY, age_seconds: int = 0
) -> tuple[bytes, dict[str, str]]:
    timestamp = int(time.time()) - age_seconds
    headers = {
        "content-type": "application/json",
        "webhook-id": EVENT_ID,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_webhook(secrets_used, EVENT_ID, timestamp, body),
    }
    return body.encode(), headers


def standard_signature(secret: str, event_id: str, timestamp: int, body: str) -> str:
    """``v1,`` + base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}`` keyed by the secret's bytes."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{event_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def test_signature_is_the_standard_webhooks_hmac_a_receiver_can_recompute() -> None:
    """A receiver without our library recomputes the MAC from the spec and gets ours."""
    timestamp = 1_796_000_000
    assert sign_webhook((SECRET,), EVENT_ID, timestamp, BODY) == standard_signature(
        SECRET, EVENT_ID, timestamp, BODY
    )


def test_during_rotation_each_live_secret_signs_in_order() -> None:
    timestamp = 1_796_000_000
    signed = sign_webhook((OTHER_SECRET, SECRET), EVENT_ID, timestamp, BODY)
    assert signed.split(" ") == [
        standard_signature(OTHER_SECRET, EVENT_ID, timestamp, BODY),
        standard_signature(SECRET, EVENT_ID, timestamp, BODY),
    ]


def test_a_genuine_delivery_verifies_and_returns_the_parsed_body() -> None:
    body, headers = delivery()
    assert verify_webhook(SECRET, body, headers) == json.loads(BODY)


def test_header_names_are_case_insensitive() -> None:
    body, headers = delivery()
    shouted = {name.title(): value for name, value in headers.items()}
    assert verify_webhook(SECRET, body, shouted)["id"] == EVENT_ID


def test_body_tampered_in_transit_is_refused() -> None:
    """A proxy rewrites the consent type; the signature no longer matches."""
    body, headers = delivery()
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, body.replace(b"CDR", b"ALL"), headers)


def test_delivery_signed_with_another_secret_is_refused() -> None:
    """An attacker who knows the URL signs with a secret of their own."""
    body, headers = delivery((OTHER_SECRET,))
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, body, headers)


def test_webhook_id_swapped_is_refused() -> None:
    """Replaying a body under another id (to dodge dedupe) breaks the signature."""
    body, headers = delivery()
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, body, {**headers, "webhook-id": EVENT_ID[:-1] + "9"})


def decoded(signature: str) -> bytes | None:
    try:
        return base64.b64decode(signature.removeprefix("v1,"))
    except ValueError:
        return None


@pytest.mark.parametrize("age_seconds", range(8))
def test_every_single_character_change_to_the_signature_is_refused(age_seconds: int) -> None:
    """A forger changing one character at a time never gets a same-length signature through.

    Base64 lets the last character before ``=`` carry two unused bits, so a few
    spellings decode to the very same MAC: those are the genuine signature, not
    forgeries, and are left out.
    """
    body, headers = delivery(age_seconds=age_seconds)
    signature = headers["webhook-signature"]
    genuine = decoded(signature)
    for position in range(len("v1,"), len(signature)):
        for replacement in "AZaz09+/=":
            forged = signature[:position] + replacement + signature[position + 1 :]
            if forged == signature or decoded(forged) == genuine:
                continue
            assert len(forged) == len(signature)
            with pytest.raises(WebhookVerificationError):
                verify_webhook(SECRET, body, {**headers, "webhook-signature": forged})


def test_delivery_older_than_five_minutes_is_refused() -> None:
    """A captured delivery replayed later is refused even though it is genuine."""
    body, headers = delivery(age_seconds=6 * 60)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook(SECRET, body, headers)


def test_delivery_timestamped_in_the_future_is_refused() -> None:
    """A delivery dated ahead (to outlive the replay window) is refused."""
    body, headers = delivery(age_seconds=-6 * 60)
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify_webhook(SECRET, body, headers)


def test_timestamp_changed_on_a_genuine_delivery_is_refused() -> None:
    """Refreshing an old delivery's timestamp breaks its signature."""
    body, headers = delivery(age_seconds=60)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, body, {**headers, "webhook-timestamp": str(int(time.time()))})


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_each_missing_header_is_refused(missing: str) -> None:
    body, headers = delivery()
    del headers[missing]
    with pytest.raises(WebhookVerificationError, match="Missing required headers"):
        verify_webhook(SECRET, body, headers)


@pytest.mark.parametrize("empty", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_each_empty_header_is_refused(empty: str) -> None:
    body, headers = delivery()
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, body, {**headers, empty: ""})


def test_during_rotation_either_secret_verifies_the_same_delivery() -> None:
    body, headers = delivery((OTHER_SECRET, SECRET))
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify_webhook(SECRET, body, headers)["id"] == EVENT_ID
    assert verify_webhook(OTHER_SECRET, body, headers)["id"] == EVENT_ID


def test_unknown_signature_versions_are_skipped_not_trusted() -> None:
    body, headers = delivery()
    v1 = headers["webhook-signature"]
    forged_v2 = "v2," + v1.split(",", 1)[1]
    assert verify_webhook(SECRET, body, {**headers, "webhook-signature": f"{forged_v2} {v1}"})
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, body, {**headers, "webhook-signature": forged_v2})


@pytest.mark.parametrize(
    "signature",
    [
        "v1,é" + "A" * 43,  # non-ASCII
        "v1,ü",
        "v1",  # no comma
        "v1,abc,def",
        "v1,abc",  # bad base64 padding
        "   ",
        "v1,\x00",
    ],
)
def test_malformed_signature_header_is_refused_without_crashing(signature: str) -> None:
    """A hostile sender's garbage header must end in a verification error, not a 500."""
    body, headers = delivery()
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, body, {**headers, "webhook-signature": signature})


@pytest.mark.parametrize("timestamp", ["nan", "inf", "1e400", "-1", "soon", "١٢٣"])
def test_malformed_timestamp_is_refused(timestamp: str) -> None:
    body, headers = delivery()
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, body, {**headers, "webhook-timestamp": timestamp})


def test_body_that_is_not_utf8_is_refused_without_crashing() -> None:
    _, headers = delivery()
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, b"\xff\xfe{}", headers)


def test_signed_body_that_is_not_json_is_refused() -> None:
    body, headers = delivery(body="not json")
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, body, headers)


def test_secrets_have_the_standard_shape() -> None:
    secret = SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
    assert len(base64.b64decode(secret.removeprefix(SECRET_PREFIX))) == 32
    body, headers = delivery((secret,))
    assert verify_webhook(secret, body, headers)["id"] == EVENT_ID
