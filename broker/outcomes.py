"""Outcomes: recorded once, then delivered to the provider.

:func:`record_outcome` writes, in one transaction, the flow's consumption, the
action item's final state (through :mod:`broker.lifecycle`: status, consent or
registration, events, audit) and a one-time ``resultCode``. :func:`delivery_for`
then says how the admin's browser goes back: a 303 to the stored callback with
status parameters, or (``form_post``) a page that posts a signed result JWT.
No token or code other than the one-time ``resultCode`` ever goes into a URL.
:func:`redeem_result` hands the result to the provider's backend exactly once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlencode

import jwt
from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from broker import errors, lifecycle
from broker.db import results
from broker.flow_store import Claim, consume_flow, purge_flows, read_consumed
from broker.health import database_unreachable
from broker.lifecycle import FinishedItem, Outcome
from broker.observability import annotate
from broker.runtime import Runtime
from broker.tokens import digest, random_token

RESULT_CODE_PREFIX = "ctt_rc_"
RESULT_JWT_TYP = "ctt-result+jwt"

# Built once and run with parameters (every flow stores one result, every provider redeems it).
_INSERT_RESULT = insert(results)
_NOW = bindparam("r_now", type_=results.c.redeemed_at.type)
_REDEEM = (
    update(results)
    .where(
        results.c.code_hash == bindparam("r_code_hash"),
        results.c.provider_id == bindparam("r_provider_id"),
        results.c.redeemed_at.is_(None),
        results.c.expires_at > _NOW,
    )
    .values(redeemed_at=_NOW)
    .returning(results.c.payload)
)
# The tokens are handed over once; nothing worth stealing stays behind.
_BLANK = update(results).where(results.c.code_hash == bindparam("r_code_hash")).values(payload="{}")


@dataclass(frozen=True)
class Delivery:
    """How the admin's browser returns to the provider."""

    mode: Literal["redirect", "form_post"]
    location: str
    form_fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Recorded:
    """An outcome as stored, its one-time result code and the result document."""

    outcome: Outcome
    code: str
    document: dict[str, Any]

    def __repr__(self) -> str:
        return f"Recorded(status={self.outcome.status!r})"


def record_outcome(
    runtime: Runtime, claim: Claim, item: FinishedItem, outcome: Outcome
) -> Recorded:
    """Consume the claimed flow and store ``outcome``, in one transaction.

    Nothing is stored unless ``claim`` still holds the flow, and the flow is not
    consumed unless the outcome is stored: a failure anywhere leaves both
    untouched, for the admin's refresh (or the worker) to finish. A registration
    that loses the race for its tenant is stored as ``TENANT_ALREADY_REGISTERED``.
    Raises :class:`errors.FlowInProgress` when another callback took the flow
    over, and :class:`errors.LinkRevoked` or :class:`errors.LinkUsed` (with the
    flow consumed) when the item ended some other way meanwhile.
    """
    code = RESULT_CODE_PREFIX + random_token(runtime.random_bytes)
    try:
        return _store_patiently(runtime, claim, item, outcome, code)
    except IntegrityError:
        if not outcome.register_tenant:
            raise
        error: errors.BrokerError = errors.TenantAlreadyRegistered(
            "this Microsoft tenant is already registered to another of your enterprises"
        )
    except errors.EnterpriseAlreadyRegistered as exc:
        error = exc
    failed = replace(outcome, status="failed", error=error, register_tenant=False, payload={})
    return _store_patiently(runtime, claim, item, failed, code)


def write_delays(patience_seconds: float) -> list[float]:
    """The pauses between tries of an outcome write: doubling to 2 s, adding up to ``patience``."""
    delays: list[float] = []
    delay = 0.25
    while sum(delays) + delay <= patience_seconds:
        delays.append(delay)
        delay = min(delay * 2, 2.0)
    return delays


def _store_patiently(
    runtime: Runtime, claim: Claim, item: FinishedItem, outcome: Outcome, code: str
) -> Recorded:
    """Store the outcome, retrying while the database is unreachable.

    The outcome is known (Microsoft has answered, a code may be redeemed): a
    database that comes back within ``CTT_OUTCOME_WRITE_PATIENCE_SECONDS`` must
    not cost the admin the result. A commit whose answer was lost may have gone
    through: the retry then finds the flow spent with this very result code, and
    reports that stored outcome instead of a replay.
    """
    delays = write_delays(runtime.settings.outcome_write_patience_seconds)
    for attempt in range(len(delays) + 1):
        try:
            return _store(runtime, claim, item, outcome, code, retried=attempt > 0)
        except SQLAlchemyError as exc:
            if attempt == len(delays) or not database_unreachable(exc):
                raise
            runtime.microsoft.sleep(delays[attempt])
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def delivery_for(runtime: Runtime, item: FinishedItem, recorded: Recorded) -> Delivery:
    """The way back to the provider's callback for a stored outcome."""
    outcome = recorded.outcome
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
        fields = {"result": _result_jwt(runtime, item, recorded)}
        if item.provider_state is not None:
            fields["state"] = item.provider_state
        return Delivery(mode="form_post", location=item.callback_url, form_fields=fields)
    params["resultCode"] = recorded.code
    separator = "&" if "?" in item.callback_url else "?"
    return Delivery(mode="redirect", location=item.callback_url + separator + urlencode(params))


def redeem_result(runtime: Runtime, provider_id: str, result_code: str) -> dict[str, Any]:
    """The result behind ``result_code``, once, for the provider it belongs to."""
    if not result_code.startswith(RESULT_CODE_PREFIX) or len(result_code) > 100:
        raise errors.ResultCodeInvalid("unknown, expired or already redeemed result code")
    code_hash = digest(result_code)
    now = runtime.now()
    with runtime.engine.begin() as connection:
        # One winner: the claim is conditional, and returns the payload it claimed.
        payload = connection.execute(
            _REDEEM, {"r_code_hash": code_hash, "r_provider_id": provider_id, "r_now": now}
        ).scalar_one_or_none()
        if payload is None:
            raise errors.ResultCodeInvalid("unknown, expired or already redeemed result code")
        connection.execute(_BLANK, {"r_code_hash": code_hash})
    document: dict[str, Any] = json.loads(payload)
    annotate(actionItemId=document.get("actionItemId"))
    return document


def purge_expired(runtime: Runtime) -> int:
    """Blank results nobody redeemed in time and drop expired flows; returns how many."""
    now = runtime.now()
    with runtime.engine.begin() as connection:
        blanked = connection.execute(
            update(results)
            .where(results.c.expires_at <= now, results.c.payload != "{}")
            .values(payload="{}")
        )
        dropped = purge_flows(connection, now)
    return int(blanked.rowcount) + dropped


def _store(
    runtime: Runtime,
    claim: Claim,
    item: FinishedItem,
    outcome: Outcome,
    code: str,
    *,
    retried: bool = False,
) -> Recorded:
    now = runtime.now()
    ended: errors.BrokerError | None = None
    with runtime.engine.begin() as connection:
        if not consume_flow(connection, claim, now):
            if retried and _stored_with(connection, code):
                # The earlier try's commit went through; only its answer was lost.
                return Recorded(
                    outcome=outcome, code=code, document=lifecycle.result_document(item, outcome)
                )
            if read_consumed(connection, claim.jti):
                raise errors.StateReplayed("this sign-in was already completed")
            raise errors.FlowInProgress("this sign-in is being completed: reload in a moment")
        try:
            document = lifecycle.record_finished(connection, runtime, item, outcome)
        except (errors.LinkRevoked, errors.LinkUsed) as exc:
            ended = exc  # the item has its outcome already; the flow is spent with it
        else:
            # form_post hands the result over in the signed JWT: no second copy to redeem.
            posted = item.result_delivery == "form_post"
            connection.execute(
                _INSERT_RESULT,
                {
                    "code_hash": digest(code),
                    "action_item_id": item.action_item_id,
                    "provider_id": item.provider_id,
                    "payload": "{}" if posted else json.dumps(document),
                    "created_at": now,
                    "expires_at": now + timedelta(seconds=runtime.settings.result_code_ttl_seconds),
                    "redeemed_at": now if posted else None,
                },
            )
    if ended is not None:
        raise ended
    return Recorded(outcome=outcome, code=code, document=document)


def _stored_with(connection: Connection, code: str) -> bool:
    found = connection.execute(
        select(results.c.code_hash).where(results.c.code_hash == digest(code))
    ).first()
    return found is not None


def _result_jwt(runtime: Runtime, item: FinishedItem, recorded: Recorded) -> str:
    """The form_post result: the redeemable payload, signed ES256 with our published key."""
    now = runtime.now()
    keys = runtime.credentials
    claims = {
        "iss": runtime.settings.public_base_url,
        "aud": item.provider_id,
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + runtime.settings.result_code_ttl_seconds,
        "jti": digest(recorded.code)[:32],
        "result": recorded.document,
    }
    return jwt.encode(
        claims,
        keys.result_key,
        algorithm="ES256",
        headers={"kid": keys.result_kid, "typ": RESULT_JWT_TYP},
    )
