"""JSON shapes of broker values, exactly as ``openapi.yaml`` describes them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from broker.action_items import ActionItem, IssuedActionItem
from broker.catalog import ActionSpec
from broker.enterprises import Enterprise
from broker.events import AuditEntry
from broker.providers import ProviderProfile
from broker.webhook_queue import WebhookAttempt, WebhookDelivery

Reply = tuple[dict[str, Any], int, dict[str, str]]


def reply(body: dict[str, Any], status: int = 200, location: str | None = None) -> Reply:
    """A JSON answer; the spec lists problem+json too, so the type is always explicit."""
    headers = {"Content-Type": "application/json"}
    if location is not None:
        headers["Location"] = location
    return body, status, headers


def timestamp(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a ``Z``, or None."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def enterprise(value: Enterprise) -> dict[str, Any]:
    """The ``Enterprise`` schema."""
    return {
        "enterpriseId": value.enterprise_id,
        "name": value.name,
        "externalId": value.external_id,
        "registration": {
            "status": "registered" if value.registered else "notRegistered",
            "tenantId": value.tenant_id,
            "registeredAt": timestamp(value.registered_at),
        },
        "consents": [
            {
                "consentType": consent.consent_type,
                "actionType": consent.action_type,
                "mandatory": consent.mandatory,
                "status": consent.status,
                "requestedAt": timestamp(consent.requested_at),
                "updatedAt": timestamp(consent.updated_at),
                "grantedAt": timestamp(consent.granted_at),
                "errorCode": consent.error_code,
            }
            for consent in value.consents
        ],
        "teamsApps": [
            {
                "manifestId": app.manifest_id,
                "packageId": app.package_id,
                "status": app.status,
                "version": app.version,
                "catalogAppId": app.catalog_app_id,
                "errorCode": app.error_code,
                "actionItemId": app.action_item_id,
                "updatedAt": timestamp(app.updated_at),
            }
            for app in value.teams_apps
        ],
        "createdAt": timestamp(value.created_at),
        "updatedAt": timestamp(value.updated_at),
    }


def action_item(value: ActionItem) -> dict[str, Any]:
    """The ``ActionItem`` schema."""
    return {
        "actionItemId": value.action_item_id,
        "enterpriseId": value.enterprise_id,
        "actionType": value.action_type,
        "consentType": value.consent_type,
        "mandatory": value.mandatory,
        "status": value.status,
        "callbackUrl": value.callback_url,
        "state": value.provider_state,
        "resultDelivery": value.result_delivery,
        "errorCode": value.error_code,
        "createdAt": timestamp(value.created_at),
        "expiresAt": timestamp(value.expires_at),
        "openedAt": timestamp(value.opened_at),
        "finishedAt": timestamp(value.finished_at),
        "revokedAt": timestamp(value.revoked_at),
        "teamsAppPackageIds": list(value.teams_app_package_ids)
        if value.teams_app_package_ids is not None
        else None,
    }


def issued_action_item(value: IssuedActionItem) -> dict[str, Any]:
    """The ``ActionItemCreated`` schema."""
    item = value.item
    return {
        "actionItemId": item.action_item_id,
        "url": value.url,
        "actionType": item.action_type,
        "consentType": item.consent_type,
        "mandatory": item.mandatory,
        "enterpriseId": item.enterprise_id,
        "status": item.status,
        "expiresAt": timestamp(item.expires_at),
    }


def action_type(spec: ActionSpec) -> dict[str, Any]:
    """The ``ActionTypeInfo`` schema."""
    return {
        "actionType": spec.action_type,
        "kind": spec.kind,
        "consentType": spec.consent_type,
        "mandatory": spec.mandatory,
        "description": spec.description,
    }


def audit_entry(value: AuditEntry) -> dict[str, Any]:
    """The ``AuditEntry`` schema."""
    return {
        "auditId": value.audit_id,
        "actor": value.actor,
        "action": value.action,
        "enterpriseId": value.enterprise_id,
        "actionItemId": value.action_item_id,
        "details": value.details,
        "createdAt": timestamp(value.created_at),
    }


def delivery(value: WebhookDelivery) -> dict[str, Any]:
    """The ``Delivery`` schema."""
    return {
        "eventId": value.event_id,
        "url": value.url,
        "status": value.status,
        "attempts": value.attempts,
        "nextAttemptAt": timestamp(value.next_attempt_at)
        if value.status in ("pending", "delivering")
        else None,
        "giveUpAt": timestamp(value.give_up_at),
        "deliveredAt": timestamp(value.delivered_at),
        "lastStatusCode": value.last_status_code,
        "lastError": value.last_error,
    }


def attempt(value: WebhookAttempt) -> dict[str, Any]:
    """The ``DeliveryAttempt`` schema."""
    return {
        "attempt": value.attempt,
        "url": value.url,
        "startedAt": timestamp(value.started_at),
        "durationMs": value.duration_ms,
        "statusCode": value.status_code,
        "error": value.error,
        "outcome": value.outcome,
    }


def provider_profile(value: ProviderProfile) -> dict[str, Any]:
    """The ``Provider`` schema: the caller's configuration, never a secret."""
    provider = value.provider
    return {
        "providerId": provider.provider_id,
        "name": provider.name,
        "development": provider.development,
        "callbackUrls": list(provider.callback_urls),
        "webhook": {
            "url": provider.webhook_url,
            "includeTokens": value.webhook_include_tokens,
            "shareRefreshToken": provider.share_refresh_token,
            "secrets": [
                {
                    "secretId": secret.secret_id,
                    "createdAt": timestamp(secret.created_at),
                    "expiresAt": timestamp(secret.expires_at),
                }
                for secret in value.webhook_secrets
            ],
        },
        "apiKeys": [
            {
                "keyId": key.key_id,
                "createdAt": timestamp(key.created_at),
                "expiresAt": timestamp(key.expires_at),
                "revokedAt": timestamp(key.revoked_at),
            }
            for key in provider.keys
        ],
        "createdAt": timestamp(provider.created_at),
    }
