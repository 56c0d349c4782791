"""Flow records: opened at launch, claimed by a callback, consumed with the outcome.

A flow record holds MSAL's secrets for one admin round trip. Its life has three
steps, each a conditional update so that several instances agree on one winner:

1. :func:`open_flow` writes it when the admin clicks the link;
2. :func:`claim_flow` leases it to one callback before Microsoft is called
   (a racing callback loses; a lease whose holder died runs out);
3. :func:`consume_flow` marks it used and wipes the secrets, inside the
   transaction that records the outcome, and only while the claim still holds.

Consumption never happens on its own, so a spent flow always has an outcome.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, or_, select, update

from broker import errors
from broker.db import flows
from broker.microsoft import RETRY_DELAYS
from broker.runtime import Runtime
from broker.settings import Settings
from broker.tokens import random_token

# Calls to Microsoft (or Graph) one completion may make, at most, besides its retried
# ones: MSAL's discovery before the redemption, and a Teams deployment's find and
# publish or update per app (a margin for a few apps; the flow's expiry caps it all).
EXTRA_CALLS = 8


def claim_lease(settings: Settings) -> timedelta:
    """How long a callback holds its flow: the slowest completion the settings allow.

    A shorter lease would let a refresh take the flow over from a callback still
    waiting on Microsoft, redeem the code a second time (``invalid_grant``) and
    record that instead of the sign-in that succeeded. Never past the flow's life.
    """
    timeout = settings.microsoft_timeout_seconds
    tries = len(RETRY_DELAYS) + 1
    one_retried_call = tries * timeout + sum(RETRY_DELAYS)
    sign_in = 2 * one_retried_call + EXTRA_CALLS * timeout + settings.graph_retry_budget_seconds
    consent = (
        settings.consent_confirm_attempts * one_retried_call
        + (settings.consent_confirm_attempts - 1) * settings.consent_confirm_interval_seconds
    )
    worst = max(sign_in, consent) + settings.outcome_write_patience_seconds
    return timedelta(seconds=min(worst, settings.flow_ttl_seconds))


# Built once: the statements of every admin flow, run with parameters. Building a
# statement with literal values costs more CPU than running it.
_OPEN = insert(flows)
_READ = select(flows.c.action_item_id, flows.c.consumed_at, flows.c.launch_request_id).where(
    flows.c.jti == bindparam("f_jti")
)
_CLAIM = (
    update(flows)
    .where(
        flows.c.jti == bindparam("f_jti"),
        flows.c.consumed_at.is_(None),
        or_(flows.c.claimed_until.is_(None), flows.c.claimed_until <= bindparam("f_now")),
    )
    .values(
        claim_token=bindparam("f_token"),
        claimed_until=bindparam("f_until", type_=flows.c.claimed_until.type),
    )
    .returning(flows.c.msal_flow)
)
_CONSUME = (
    update(flows)
    .where(
        flows.c.jti == bindparam("f_jti"),
        flows.c.claim_token == bindparam("f_token"),
        flows.c.consumed_at.is_(None),
    )
    .values(
        consumed_at=bindparam("f_now", type_=flows.c.consumed_at.type),
        msal_flow=None,
        claimed_until=None,
    )
)
_CONSUMED_AT = select(flows.c.consumed_at).where(flows.c.jti == bindparam("f_jti"))


@dataclass(frozen=True)
class FlowRecord:
    """A flow as stored: which action item it serves and where it stands."""

    jti: str
    action_item_id: str
    consumed: bool
    launch_request_id: str | None = None


@dataclass(frozen=True)
class Claim:
    """The lease one callback holds on a flow, and the flow's secrets."""

    jti: str
    token: str
    msal_flow: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"Claim(jti={self.jti!r})"


@dataclass(frozen=True)
class AbandonedFlow:
    """A flow whose claim ran out without an outcome, past its own lifetime."""

    jti: str
    action_item_id: str


def open_flow(
    connection: Connection,
    *,
    jti: str,
    action_item_id: str,
    msal_flow: dict[str, Any] | None,
    created_at: datetime,
    expires_at: datetime,
    launch_request_id: str | None = None,
) -> None:
    """Store a new flow record (in the caller's transaction)."""
    connection.execute(
        _OPEN,
        {
            "jti": jti,
            "action_item_id": action_item_id,
            "msal_flow": json.dumps(msal_flow) if msal_flow is not None else None,
            "created_at": created_at,
            "expires_at": expires_at,
            "launch_request_id": launch_request_id,
        },
    )


def read_flow(runtime: Runtime, jti: str) -> FlowRecord | None:
    """The flow record of ``jti``, or None when there is none (purged or never opened)."""
    with runtime.engine.connect() as connection:
        row = connection.execute(_READ, {"f_jti": jti}).first()
    if row is None:
        return None
    return FlowRecord(
        jti=jti,
        action_item_id=row.action_item_id,
        consumed=row.consumed_at is not None,
        launch_request_id=row.launch_request_id,
    )


def claim_flow(runtime: Runtime, jti: str) -> Claim:
    """Lease the flow to this callback; raise if it is spent or someone else holds it.

    Raises :class:`errors.StateReplayed` for a consumed flow and
    :class:`errors.FlowInProgress` while another callback's lease runs.
    """
    now = runtime.now()
    token = random_token(runtime.random_bytes)
    until = now + claim_lease(runtime.settings)
    with runtime.engine.begin() as connection:
        claimed = connection.execute(
            _CLAIM, {"f_jti": jti, "f_now": now, "f_token": token, "f_until": until}
        ).first()
        if claimed is None:
            if read_consumed(connection, jti):
                raise errors.StateReplayed("this sign-in was already completed")
            raise errors.FlowInProgress("this sign-in is being completed: reload in a moment")
    stored = claimed.msal_flow
    return Claim(jti=jti, token=token, msal_flow=json.loads(stored) if stored else None)


def consume_flow(connection: Connection, claim: Claim, now: datetime) -> bool:
    """Mark the flow used and wipe its secrets, if ``claim`` still holds it.

    Runs in the outcome's transaction: False means another callback took over
    after this one's lease ran out, and this outcome must not be recorded.
    """
    consumed = connection.execute(
        _CONSUME, {"f_jti": claim.jti, "f_token": claim.token, "f_now": now}
    )
    return consumed.rowcount == 1


def read_consumed(connection: Connection, jti: str) -> bool:
    """True when the flow of ``jti`` is spent (in the caller's transaction)."""
    consumed_at = connection.execute(_CONSUMED_AT, {"f_jti": jti}).scalar_one_or_none()
    return consumed_at is not None


def abandoned_flows(connection: Connection, now: datetime, limit: int) -> list[AbandonedFlow]:
    """Claimed flows whose lease and lifetime both ran out without an outcome."""
    rows = connection.execute(
        select(flows.c.jti, flows.c.action_item_id)
        .where(
            flows.c.consumed_at.is_(None),
            flows.c.claimed_until.is_not(None),
            flows.c.claimed_until <= now,
            flows.c.expires_at <= now,
        )
        .order_by(flows.c.expires_at)
        .limit(limit)
    )
    return [AbandonedFlow(jti=row.jti, action_item_id=row.action_item_id) for row in rows]


def has_live_flow(connection: Connection, action_item_id: str, now: datetime, jti: str) -> bool:
    """Whether the item has another flow still running (the admin clicked the link again)."""
    found = connection.execute(
        select(flows.c.jti).where(
            flows.c.action_item_id == action_item_id,
            flows.c.jti != jti,
            flows.c.consumed_at.is_(None),
            or_(flows.c.expires_at > now, flows.c.claimed_until > now),
        )
    ).first()
    return found is not None


def consume_abandoned(connection: Connection, flow: AbandonedFlow, now: datetime) -> bool:
    """Consume an abandoned flow, unless a late callback claimed or finished it meanwhile."""
    consumed = connection.execute(
        update(flows)
        .where(
            flows.c.jti == flow.jti,
            flows.c.consumed_at.is_(None),
            flows.c.claimed_until <= now,
        )
        .values(consumed_at=now, msal_flow=None, claimed_until=None)
    )
    return consumed.rowcount == 1


def purge_flows(connection: Connection, now: datetime) -> int:
    """Drop expired flows, except claimed ones still waiting for their outcome."""
    # Unused flows still hold MSAL's PKCE verifier and nonce: nothing to keep.
    dropped = connection.execute(
        delete(flows).where(
            flows.c.expires_at <= now,
            or_(flows.c.claimed_until.is_(None), flows.c.consumed_at.is_not(None)),
        )
    )
    return int(dropped.rowcount)
