"""Outcomes: recorded once, then delivered to the provider.

:func:`record_outcome` writes, in one transaction, the action item's final
status, the enterprise's consent or registration change and a one-time
``resultCode``. :func:`delivery_for` then says how the admin's browser goes
back: a 303 to the stored callback with status parameters, or (``form_post``)
a page that posts a signed result JWT. No token or code other than the
one-time ``resultCode`` ever goes into a URL. :func:`redeem_result` hands the
result to the provider's backend exactly once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlencode

import jwt
from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from broker import errors
from broker.db import action_items, enterprise_consents, enterprises, flows, providers, results
from broker.events import emit_event, record_audit
from broker.runtime import Runtime
from broker.tokens import digest, random_token

OutcomeStatus = Literal["completed", "failed", "pending"]
RESULT_CODE_PREFIX = "ctt_rc_"
RESULT_JWT_TYP = "ctt-result+jwt"


@dataclass(frozen=True)
class Outcome:
    """What happened to one action item's round trip."""

    status: OutcomeStatus
    error: errors.BrokerError | None = None
    tenant_id: str | None = None
    register_tenant: bool = False
    consent_type: str | None = None
    consent_status: Literal["granted", "failed", "pending"] | None = None
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def error_code(self) -> str | None:
        """The stable code reported to the provider, on failure."""
        return self.error.code if self.error else None


@dataclass(frozen=True)
class Delivery:
    """How the admin's browser returns to the provider."""

    mode: Literal["redirect", "form_post"]
    location: str
    form_fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FinishedItem:
    """The action item facts delivery needs."""

    action_item_id: str
    provider_id: str
    enterprise_id: str
    action_type: str
    callback_url: str
    provider_state: str | None
    result_delivery: str
    reregister: bool = False


def record_outcome(runtime: Runtime, item: FinishedItem, outcome: Outcome) -> tuple[Outcome, str]:
    """Store ``outcome`` once; returns the outcome as stored and its result code.

    A registration that loses the race for its tenant is stored as the
    ``TENANT_ALREADY_REGISTERED`` failure instead. Raises
    :class:`errors.LinkUsed` when another round trip finished the item first.
    """
    try:
        return _store(runtime, item, outcome)
    except IntegrityError:
        if not outcome.register_tenant:
            raise
        error: errors.BrokerError = errors.TenantAlreadyRegistered(
            "this Microsoft tenant is already registered to another of your enterprises"
        )
    except errors.EnterpriseAlreadyRegistered as exc:
        error = exc
    return _store(runtime, item, Outcome(status="failed", error=error, tenant_id=outcome.tenant_id))


def delivery_for(runtime: Runtime, item: FinishedItem, outcome: Outcome, code: str) -> Delivery:
    """The way back to the provider's callback for a stored outcome."""
    params: dict[str, str] = {
        "status": outcome.status,
        "actionType": item.action_type,
        "actionItemId": item.action_item_id,
    }
    if item.provider_state is not None:
        params["state"] = item.provider_state
    if outcome.error_code:
        params["errorCode"] = outcome.error_code
    if item.result_delivery == "form_post":
        fields = {"result": _result_jwt(runtime, item, outcome, code)}
        _consume(runtime, code)  # delivered in the JWT: no second copy to redeem
        if item.provider_state is not None:
            fields["state"] = item.provider_state
        return Delivery(mode="form_post", location=item.callback_url, form_fields=fields)
    params["resultCode"] = code
    separator = "&" if "?" in item.callback_url else "?"
    return Delivery(mode="redirect", location=item.callback_url + separator + urlencode(params))


def redeem_result(runtime: Runtime, provider_id: str, result_code: str) -> dict[str, Any]:
    """The result behind ``result_code``, once, for the provider it belongs to."""
    if not result_code.startswith(RESULT_CODE_PREFIX) or len(result_code) > 100:
        raise errors.ResultCodeInvalid("unknown, expired or already redeemed result code")
    code_hash = digest(result_code)
    now = runtime.now()
    with runtime.engine.begin() as connection:
        claimed = connection.execute(
            update(results)
            .where(
                results.c.code_hash == code_hash,
                results.c.provider_id == provider_id,
                results.c.redeemed_at.is_(None),
                results.c.expires_at > now,
            )
            .values(redeemed_at=now)
        )
        if claimed.rowcount != 1:
            raise errors.ResultCodeInvalid("unknown, expired or already redeemed result code")
        payload = connection.execute(
            select(results.c.payload).where(results.c.code_hash == code_hash)
        ).scalar_one()
        # The tokens are handed over once; nothing worth stealing stays behind.
        connection.execute(
            update(results).where(results.c.code_hash == code_hash).values(payload="{}")
        )
    document: dict[str, Any] = json.loads(payload)
    return document


def _consume(runtime: Runtime, code: str) -> None:
    with runtime.engine.begin() as connection:
        connection.execute(
            update(results)
            .where(results.c.code_hash == digest(code))
            .values(redeemed_at=runtime.now(), payload="{}")
        )


def purge_expired(runtime: Runtime) -> int:
    """Blank results nobody redeemed in time and drop expired flows; returns how many."""
    now = runtime.now()
    with runtime.engine.begin() as connection:
        blanked = connection.execute(
            update(results)
            .where(results.c.expires_at <= now, results.c.payload != "{}")
            .values(payload="{}")
        )
        # Unused flows still hold MSAL's PKCE verifier and nonce: nothing to keep.
        dropped = connection.execute(delete(flows).where(flows.c.expires_at <= now))
    return int(blanked.rowcount) + int(dropped.rowcount)


def _store(runtime: Runtime, item: FinishedItem, outcome: Outcome) -> tuple[Outcome, str]:
    now = runtime.now()
    code = RESULT_CODE_PREFIX + random_token(runtime.random_bytes)
    item_status = {"completed": "completed", "failed": "failed", "pending": "pending"}[
        outcome.status
    ]
    with runtime.engine.begin() as connection:
        finished = connection.execute(
            update(action_items)
            .where(
                action_items.c.id == item.action_item_id,
                action_items.c.status.in_(("created", "opened")),
            )
            .values(
                status=item_status,
                error_code=outcome.error_code,
                finished_at=now,
                updated_at=now,
            )
        )
        if finished.rowcount != 1:
            status = connection.execute(
                select(action_items.c.status).where(action_items.c.id == item.action_item_id)
            ).scalar_one()
            if status == "revoked":  # the provider revoked it while the admin was away
                raise errors.LinkRevoked("the provider withdrew this link")
            raise errors.LinkUsed("this link was already used")
        if outcome.register_tenant and outcome.tenant_id:
            _bind_tenant(connection, item, outcome.tenant_id, now)
        if outcome.consent_type and outcome.consent_status:
            _set_consent(connection, item.enterprise_id, outcome, now)
        payload = {
            "actionItemId": item.action_item_id,
            "actionType": item.action_type,
            "enterpriseId": item.enterprise_id,
            "status": outcome.status,
            "errorCode": outcome.error_code,
            "tenantId": outcome.tenant_id,
            **outcome.payload,
        }
        _announce(connection, runtime, item, outcome, payload)
        connection.execute(
            insert(results).values(
                code_hash=digest(code),
                action_item_id=item.action_item_id,
                provider_id=item.provider_id,
                payload=json.dumps(payload),
                created_at=now,
                expires_at=now + timedelta(seconds=runtime.settings.result_code_ttl_seconds),
            )
        )
    return outcome, code


def _announce(
    connection: Connection,
    runtime: Runtime,
    item: FinishedItem,
    outcome: Outcome,
    payload: dict[str, Any],
) -> None:
    """The outcome's events and audit line, in the outcome's own transaction."""
    include_tokens = connection.execute(
        select(providers.c.webhook_include_tokens).where(providers.c.id == item.provider_id)
    ).scalar_one()
    data = {
        key: value
        for key, value in payload.items()
        if key != "authenticationResult" or include_tokens
    }
    data["state"] = item.provider_state
    emit_event(connection, runtime, item.provider_id, f"actionItem.{outcome.status}", data)
    if outcome.register_tenant and outcome.status == "completed":
        emit_event(connection, runtime, item.provider_id, "enterprise.registered", data)
    if outcome.consent_type and outcome.consent_status:
        emit_event(connection, runtime, item.provider_id, f"consent.{outcome.consent_status}", data)
    record_audit(
        connection,
        runtime,
        item.provider_id,
        "admin",
        f"actionItem.{outcome.status}",
        enterprise_id=item.enterprise_id,
        action_item_id=item.action_item_id,
        details={"errorCode": outcome.error_code, "tenantId": outcome.tenant_id},
    )


def _bind_tenant(connection: Connection, item: FinishedItem, tenant_id: str, now: datetime) -> None:
    """Registration's effect; a second binding needs ``reregister`` on its action item.

    Conditional, so two registration links racing cannot both bind. Moving to
    another tenant forgets the old tenant's consents: they do not follow.
    """
    previous = connection.execute(
        select(enterprises.c.tenant_id).where(enterprises.c.id == item.enterprise_id)
    ).scalar_one()
    binding = (
        update(enterprises)
        .where(enterprises.c.id == item.enterprise_id)
        .values(tenant_id=tenant_id, registered_at=now, updated_at=now)
    )
    if not item.reregister:
        binding = binding.where(enterprises.c.tenant_id.is_(None))
    bound = connection.execute(binding)
    if bound.rowcount != 1:
        raise errors.EnterpriseAlreadyRegistered("the enterprise was registered meanwhile")
    if previous is not None and previous != tenant_id:
        connection.execute(
            delete(enterprise_consents).where(
                enterprise_consents.c.enterprise_id == item.enterprise_id
            )
        )


def _set_consent(
    connection: Connection, enterprise_id: str, outcome: Outcome, now: datetime
) -> None:
    values = {
        "status": outcome.consent_status,
        "error_code": outcome.error_code,
        "updated_at": now,
    }
    if outcome.consent_status == "granted":
        values["granted_at"] = now
    existing = connection.execute(
        select(enterprise_consents.c.status).where(
            enterprise_consents.c.enterprise_id == enterprise_id,
            enterprise_consents.c.consent_type == outcome.consent_type,
        )
    ).scalar_one_or_none()
    if existing == "granted" and outcome.consent_status != "granted":
        # A cancelled or unconfirmed repeat does not undo a grant Microsoft holds.
        return
    # A real upsert: two first consents of one type must not both insert.
    row = {"enterprise_id": enterprise_id, "consent_type": outcome.consent_type, **values}
    keys = [enterprise_consents.c.enterprise_id, enterprise_consents.c.consent_type]
    if connection.dialect.name == "postgresql":
        pg = postgresql.insert(enterprise_consents).values(**row)
        connection.execute(pg.on_conflict_do_update(index_elements=keys, set_=values))
    else:
        lite = sqlite.insert(enterprise_consents).values(**row)
        connection.execute(lite.on_conflict_do_update(index_elements=keys, set_=values))


def _result_jwt(runtime: Runtime, item: FinishedItem, outcome: Outcome, code: str) -> str:
    """The form_post result: the redeemable payload, signed ES256 with our published key."""
    now = runtime.now()
    keys = runtime.keys
    with runtime.engine.connect() as connection:
        payload = connection.execute(
            select(results.c.payload).where(results.c.code_hash == digest(code))
        ).scalar_one()
    claims = {
        "iss": runtime.settings.public_base_url,
        "aud": item.provider_id,
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + runtime.settings.result_code_ttl_seconds,
        "jti": digest(code)[:32],
        "result": json.loads(payload),
    }
    return jwt.encode(
        claims,
        keys.result_key,
        algorithm="ES256",
        headers={"kid": keys.result_kid, "typ": RESULT_JWT_TYP},
    )
