"""The action item's lifecycle: every status change, and what each one implies.

An action item is ``created`` by its provider, ``opened`` when the admin first
clicks it, and then ends once: ``completed``, ``failed`` or ``pending`` (a
consent Microsoft has not made visible yet, settled later by the worker), or
``revoked`` by the provider while still live. This module is the only writer
of ``action_items.status``; each transition is a conditional update, so racing
instances agree on one winner, and each runs in its caller's transaction
together with the consent or registration change it implies, the provider's
events and the audit line. The event payload is built here, once.

A request that does not succeed never undoes what an earlier one achieved
(see :func:`as_it_stands`): a declined, failed or unconfirmed repeat of a
granted consent leaves it ``granted``, and a failed re-registration or login
leaves the enterprise's tenant as it was. The action item ends ``failed`` (or
``pending``) with its code; the result and its events report the consent and
tenant as they now stand; and no ``consent.failed`` or ``consent.pending``
event goes out for a consent that stays granted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, RowMapping, bindparam, delete, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from broker import errors, flow_store
from broker.db import (
    action_items,
    enterprise_consents,
    enterprise_teams_apps,
    enterprises,
    providers,
)
from broker.events import emit_event, record_audit
from broker.observability import annotate, current_request_id
from broker.runtime import Runtime

OutcomeStatus = Literal["completed", "failed", "pending"]
ConsentOutcome = Literal["granted", "failed", "pending"]
Actor = Literal["admin", "system"]

log = logging.getLogger("ctt_broker.lifecycle")

LIVE_ITEM_STATES = ("created", "opened")
FINISHED_ITEM_STATES = ("completed", "failed", "pending")


@dataclass(frozen=True)
class Outcome:
    """What happened to one action item's round trip."""

    status: OutcomeStatus
    error: errors.BrokerError | None = None
    tenant_id: str | None = None
    register_tenant: bool = False
    consent_type: str | None = None
    consent_status: ConsentOutcome | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    microsoft_attempts: int = 0

    @property
    def error_code(self) -> str | None:
        """The stable code reported to the provider, on failure."""
        return self.error.code if self.error else None


@dataclass(frozen=True)
class FinishedItem:
    """The action item facts an outcome and its delivery need."""

    action_item_id: str
    provider_id: str
    enterprise_id: str
    action_type: str
    callback_url: str
    provider_state: str | None
    result_delivery: str
    reregister: bool = False


def consent_payload(
    consent_type: str | None,
    required_roles: tuple[str, ...],
    status: ConsentOutcome,
    roles: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The ``consent`` part of a result and its events."""
    return {
        "consent": {
            "consentType": consent_type,
            "status": status,
            "roles": sorted(roles),
            "requiredRoles": list(required_roles),
        }
    }


def result_document(item: FinishedItem, outcome: Outcome) -> dict[str, Any]:
    """The outcome as the provider reads it: redeemed, posted as a JWT, or in events.

    ``state`` and ``callbackUrl`` let the provider bind the result to the
    session that asked for it (a result replayed into another session differs).
    ``message`` is the failure in plain words for the admin (``errors`` registry);
    ``signedInTenantId`` names the tenant of an account refused for belonging to
    another organisation than the enterprise's.
    """
    document: dict[str, Any] = {
        "actionItemId": item.action_item_id,
        "actionType": item.action_type,
        "enterpriseId": item.enterprise_id,
        "status": outcome.status,
        "errorCode": outcome.error_code,
        "message": outcome.error.message if outcome.error else None,
        "tenantId": outcome.tenant_id,
        "state": item.provider_state,
        "callbackUrl": item.callback_url,
        "microsoftAttempts": outcome.microsoft_attempts,
        **outcome.payload,
    }
    signed_in = outcome.error.extra.get("signed_in_tenant") if outcome.error else None
    if isinstance(signed_in, str):
        document["signedInTenantId"] = signed_in
    return document


@dataclass(frozen=True)
class ItemState:
    """An action item where it stands now, with its enterprise's tenant."""

    item: FinishedItem
    status: str
    expires_at: datetime
    tenant_id: str | None


# Built once and run with parameters: the admin flow reads and writes these on every
# click and callback, and building a statement with literal values costs more CPU than
# running it.
_ITEM_STATE = select(
    action_items.c.id,
    action_items.c.provider_id,
    action_items.c.enterprise_id,
    action_items.c.action_type,
    action_items.c.callback_url,
    action_items.c.provider_state,
    action_items.c.result_delivery,
    action_items.c.reregister,
    action_items.c.status,
    action_items.c.expires_at,
    enterprises.c.tenant_id,
).join(enterprises, enterprises.c.id == action_items.c.enterprise_id)
_ITEM_BY_HANDLE = _ITEM_STATE.where(action_items.c.handle_hash == bindparam("l_handle_hash"))
_ITEM_BY_ID = _ITEM_STATE.where(action_items.c.id == bindparam("l_item_id"))
_NOW = bindparam("l_now", type_=action_items.c.updated_at.type)
_OPENED = (
    update(action_items)
    .where(action_items.c.id == bindparam("l_item_id"), action_items.c.status == "created")
    .values(
        status="opened",
        opened_at=_NOW,
        updated_at=_NOW,
    )
)
_FINISHED = (
    update(action_items)
    .where(
        action_items.c.id == bindparam("l_item_id"),
        # Spelled out: an IN list is expanded anew at every execution.
        or_(*(action_items.c.status == state for state in LIVE_ITEM_STATES)),
    )
    .values(
        status=bindparam("l_status", type_=action_items.c.status.type),
        error_code=bindparam("l_error_code", type_=action_items.c.error_code.type),
        finished_at=_NOW,
        updated_at=_NOW,
    )
)
_INCLUDE_TOKENS = select(providers.c.webhook_include_tokens).where(
    providers.c.id == bindparam("l_provider_id")
)


def find_linked_item(runtime: Runtime, handle_hash: str) -> ItemState | None:
    """The action item behind a link's handle hash, or None."""
    with runtime.engine.connect() as connection:
        row = connection.execute(_ITEM_BY_HANDLE, {"l_handle_hash": handle_hash}).mappings().first()
    return None if row is None else _item_state(row)


def load_item_state(runtime: Runtime, action_item_id: str) -> ItemState:
    """The action item ``action_item_id`` (which must exist) where it stands now."""
    with runtime.engine.connect() as connection:
        row = connection.execute(_ITEM_BY_ID, {"l_item_id": action_item_id}).mappings().one()
    return _item_state(row)


def record_launch(
    runtime: Runtime,
    state: ItemState,
    *,
    jti: str,
    msal_flow: dict[str, Any] | None,
    expires_at: datetime,
) -> None:
    """The admin clicked: store the flow and mark the item ``opened``, in one transaction."""
    item = state.item
    with runtime.engine.begin() as connection:
        flow_store.open_flow(
            connection,
            jti=jti,
            action_item_id=item.action_item_id,
            msal_flow=msal_flow,
            created_at=runtime.now(),
            expires_at=expires_at,
            launch_request_id=current_request_id(),
        )
        record_opened(
            connection, runtime, item.provider_id, item.enterprise_id, item.action_item_id
        )


def _item_state(row: RowMapping) -> ItemState:
    return ItemState(
        item=_finished_item(row),
        status=row["status"],
        expires_at=row["expires_at"],
        tenant_id=row["tenant_id"],
    )


# -- created, opened, revoked -------------------------------------------------


_INSERT_ITEM = insert(action_items)


def record_created(
    connection: Connection,
    runtime: Runtime,
    columns: Mapping[str, Any],
    details: Mapping[str, Any],
) -> None:
    """Insert a new action item in ``created`` (``columns`` are all but its status)."""
    connection.execute(_INSERT_ITEM, {**columns, "status": "created"})
    annotate(actionItemId=columns["id"], actionType=columns.get("action_type"))
    record_audit(
        connection,
        runtime,
        columns["provider_id"],
        "provider",
        "actionItem.created",
        enterprise_id=columns["enterprise_id"],
        action_item_id=columns["id"],
        details=dict(details),
    )


def record_opened(
    connection: Connection, runtime: Runtime, provider_id: str, enterprise_id: str, item_id: str
) -> None:
    """The admin clicked the link: ``created`` becomes ``opened`` (later clicks leave it)."""
    connection.execute(_OPENED, {"l_item_id": item_id, "l_now": runtime.now()})
    record_audit(
        connection,
        runtime,
        provider_id,
        "admin",
        "actionItem.opened",
        enterprise_id=enterprise_id,
        action_item_id=item_id,
    )


def record_revoked(
    connection: Connection, runtime: Runtime, provider_id: str, enterprise_id: str, item_id: str
) -> bool:
    """Revoke a live item; False when it is no longer live (finished or revoked meanwhile)."""
    now = runtime.now()
    revoked = connection.execute(
        update(action_items)
        .where(
            action_items.c.id == item_id,
            action_items.c.provider_id == provider_id,
            action_items.c.status.in_(LIVE_ITEM_STATES),
        )
        .values(status="revoked", revoked_at=now, updated_at=now)
    )
    if revoked.rowcount != 1:
        return False
    record_audit(
        connection,
        runtime,
        provider_id,
        "provider",
        "actionItem.revoked",
        enterprise_id=enterprise_id,
        action_item_id=item_id,
    )
    return True


# -- finished -----------------------------------------------------------------


def record_finished(
    connection: Connection,
    runtime: Runtime,
    item: FinishedItem,
    outcome: Outcome,
    *,
    actor: Actor = "admin",
) -> dict[str, Any]:
    """End a live item with ``outcome``: status, tenant or consent, events, audit.

    Returns the result document. Raises :class:`errors.LinkRevoked` or
    :class:`errors.LinkUsed` when the item is no longer live, and
    :class:`errors.EnterpriseAlreadyRegistered` (or the database's integrity
    error) when a registration loses the race for its enterprise or tenant.
    """
    now = runtime.now()
    finished = connection.execute(
        _FINISHED,
        {
            "l_item_id": item.action_item_id,
            "l_status": outcome.status,
            "l_error_code": outcome.error_code,
            "l_now": now,
        },
    )
    if finished.rowcount != 1:
        status = connection.execute(
            select(action_items.c.status).where(action_items.c.id == item.action_item_id)
        ).scalar_one()
        if status == "revoked":  # the provider revoked it while the admin was away
            raise errors.LinkRevoked("the provider withdrew this link")
        raise errors.LinkUsed("this link was already used")
    outcome = as_it_stands(connection, item, outcome)
    if outcome.register_tenant and outcome.tenant_id:
        _bind_tenant(connection, item, outcome.tenant_id, now)
    if outcome.consent_type and outcome.consent_status:
        _set_consent(connection, item.enterprise_id, outcome, now)
    deployed = _teams_apps(outcome)
    if deployed is not None:
        _set_teams_apps(connection, item, deployed, now)
    document = result_document(item, outcome)
    _announce(connection, runtime, item, outcome, document, actor=actor)
    return document


def settle_pending(
    connection: Connection, runtime: Runtime, item: FinishedItem, outcome: Outcome
) -> bool:
    """A ``pending`` consent confirmed or given up in the background; False if settled already."""
    now = runtime.now()
    moved = connection.execute(
        update(action_items)
        .where(action_items.c.id == item.action_item_id, action_items.c.status == "pending")
        .values(status=outcome.status, error_code=outcome.error_code, updated_at=now)
    )
    if moved.rowcount != 1:
        return False
    outcome = as_it_stands(connection, item, outcome)
    # None: a granted consent stays granted, so there is nothing to write.
    if outcome.consent_status is not None:
        values: dict[str, object] = {
            "status": outcome.consent_status,
            "error_code": outcome.error_code,
            "updated_at": now,
        }
        if outcome.consent_status == "granted":
            values["granted_at"] = now
        connection.execute(
            update(enterprise_consents)
            .where(
                enterprise_consents.c.enterprise_id == item.enterprise_id,
                enterprise_consents.c.consent_type == outcome.consent_type,
            )
            .values(**values)
        )
    _announce(
        connection,
        runtime,
        item,
        outcome,
        result_document(item, outcome),
        actor="system",
        confirmed_in_background=True,
    )
    return True


def fail_abandoned_flows(runtime: Runtime, *, limit: int = 100) -> int:
    """End items whose flow reached a callback but never got its outcome; returns how many.

    A callback claims its flow before calling Microsoft. When the database fails
    before the outcome is stored, the admin's refresh normally finishes the job;
    once the claim and the flow's own lifetime have both run out, nobody will,
    so the item ends ``failed`` with ``COMPLETION_INTERRUPTED``. Each flow is
    consumed in the transaction that records the failure.
    """
    now = runtime.now()
    with runtime.engine.connect() as connection:
        candidates = flow_store.abandoned_flows(connection, now, limit)
    ended = 0
    for flow in candidates:
        try:
            ended += _fail_abandoned(runtime, flow, now)
        except Exception:  # one bad row must not stop the others, pass after pass
            log.exception("could not end the interrupted flow of %s", flow.action_item_id)
    return ended


def _fail_abandoned(runtime: Runtime, flow: flow_store.AbandonedFlow, now: datetime) -> int:
    with runtime.engine.begin() as connection:
        if flow_store.has_live_flow(connection, flow.action_item_id, now, flow.jti):
            return 0  # the admin clicked again: that flow brings the outcome (or ends later)
        if not flow_store.consume_abandoned(connection, flow, now):
            return 0  # a late refresh claimed it meanwhile
        item = load_finished_item(connection, flow.action_item_id)
        status = connection.execute(
            select(action_items.c.status).where(action_items.c.id == flow.action_item_id)
        ).scalar_one()
        if status not in LIVE_ITEM_STATES:
            return 0  # revoked or finished by another flow: it has its outcome
        spec = runtime.catalog.get(item.action_type)
        error = errors.CompletionInterrupted("the outcome could not be stored in time")
        consent: dict[str, Any] = (
            consent_payload(spec.consent_type, spec.scopes, "failed") if spec.consent_type else {}
        )
        record_finished(
            connection,
            runtime,
            item,
            Outcome(
                status="failed",
                error=error,
                consent_type=spec.consent_type,
                consent_status="failed" if spec.consent_type else None,
                payload=consent,
            ),
            actor="system",
        )
    return 1


def as_it_stands(connection: Connection, item: FinishedItem, outcome: Outcome) -> Outcome:
    """``outcome`` as it applies to what the enterprise already has.

    Only a success changes the enterprise. A request that fails (or is still
    unconfirmed) reports the tenant the enterprise is bound to now (None before
    its first registration), never the one that was tried. When the consent it
    asked for is already granted, the consent stays granted: the result says so
    (``consent.status`` is ``granted``, with the roles confirmed when it was
    granted) and the outcome carries no consent change, so no ``consent.*``
    event is emitted; the action item alone reports the failure and its code.
    """
    if outcome.status == "completed":
        return outcome
    bound = connection.execute(
        select(enterprises.c.tenant_id).where(enterprises.c.id == item.enterprise_id)
    ).scalar_one()
    outcome = replace(outcome, tenant_id=bound, register_tenant=False)
    if not outcome.consent_type or outcome.consent_status in (None, "granted"):
        return outcome
    stored = connection.execute(
        select(enterprise_consents.c.status).where(
            enterprise_consents.c.enterprise_id == item.enterprise_id,
            enterprise_consents.c.consent_type == outcome.consent_type,
        )
    ).scalar_one_or_none()
    if stored != "granted":
        return outcome
    requested = outcome.payload.get("consent") or {}
    required = tuple(requested.get("requiredRoles", ()))
    kept = consent_payload(outcome.consent_type, required, "granted", required)
    return replace(outcome, consent_status=None, payload={**outcome.payload, **kept})


def load_finished_item(connection: Connection, action_item_id: str) -> FinishedItem:
    """The facts of one action item that an outcome needs."""
    row = (
        connection.execute(select(action_items).where(action_items.c.id == action_item_id))
        .mappings()
        .one()
    )
    return _finished_item(row)


def _finished_item(row: RowMapping) -> FinishedItem:
    """The outcome's facts from an ``action_items`` row."""
    return FinishedItem(
        action_item_id=row["id"],
        provider_id=row["provider_id"],
        enterprise_id=row["enterprise_id"],
        action_type=row["action_type"],
        callback_url=row["callback_url"],
        provider_state=row["provider_state"],
        result_delivery=row["result_delivery"],
        reregister=row["reregister"],
    )


def _announce(
    connection: Connection,
    runtime: Runtime,
    item: FinishedItem,
    outcome: Outcome,
    document: dict[str, Any],
    *,
    actor: Actor,
    confirmed_in_background: bool = False,
) -> None:
    """The outcome's event set and audit line, in the outcome's own transaction."""
    include_tokens = connection.execute(
        _INCLUDE_TOKENS, {"l_provider_id": item.provider_id}
    ).scalar_one()
    data = {
        key: value
        for key, value in document.items()
        if key != "authenticationResult" or include_tokens
    }
    emit_event(connection, runtime, item.provider_id, f"actionItem.{outcome.status}", data)
    if outcome.register_tenant and outcome.status == "completed":
        emit_event(connection, runtime, item.provider_id, "enterprise.registered", data)
    if outcome.consent_type and outcome.consent_status:
        emit_event(connection, runtime, item.provider_id, f"consent.{outcome.consent_status}", data)
    if _teams_apps(outcome) is not None:
        emit_event(connection, runtime, item.provider_id, "teamsApps.deployed", data)
    details: dict[str, Any] = {
        "errorCode": outcome.error_code,
        "tenantId": outcome.tenant_id,
        "microsoftAttempts": outcome.microsoft_attempts,
    }
    if confirmed_in_background:
        details["confirmedInBackground"] = True
    record_audit(
        connection,
        runtime,
        item.provider_id,
        actor,
        f"actionItem.{outcome.status}",
        enterprise_id=item.enterprise_id,
        action_item_id=item.action_item_id,
        details=details,
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


def _teams_apps(outcome: Outcome) -> list[Mapping[str, Any]] | None:
    """The per-app results of a Teams app deployment that reached Graph, if any."""
    section = outcome.payload.get("teamsApps")
    return list(section.get("apps", [])) if isinstance(section, Mapping) else None


def _set_teams_apps(
    connection: Connection, item: FinishedItem, deployed: list[Mapping[str, Any]], now: datetime
) -> None:
    """What a deployment did to each app of the enterprise's catalog, with its outcome.

    In the outcome's transaction, like every other effect: if the outcome cannot be
    stored, neither is this, and the admin's retry (or the next deployment) finds
    the catalog as Graph now holds it and records it then.
    """
    keys = [enterprise_teams_apps.c.enterprise_id, enterprise_teams_apps.c.manifest_id]
    for app in deployed:
        if not app.get("manifestId"):
            continue  # a package that could not even be read names no app
        values = {
            "package_id": app.get("packageId"),
            "status": app["status"],
            "catalog_app_id": app.get("catalogAppId"),
            "version": app.get("version"),
            "error_code": app.get("errorCode"),
            "action_item_id": item.action_item_id,
            "updated_at": now,
        }
        row = {"enterprise_id": item.enterprise_id, "manifest_id": app["manifestId"], **values}
        if connection.dialect.name == "postgresql":
            pg = postgresql.insert(enterprise_teams_apps).values(**row)
            connection.execute(pg.on_conflict_do_update(index_elements=keys, set_=values))
        else:
            lite = sqlite.insert(enterprise_teams_apps).values(**row)
            connection.execute(lite.on_conflict_do_update(index_elements=keys, set_=values))


def _set_consent(
    connection: Connection, enterprise_id: str, outcome: Outcome, now: datetime
) -> None:
    granted = outcome.consent_status == "granted"
    row: dict[str, Any] = {
        "enterprise_id": enterprise_id,
        "consent_type": outcome.consent_type,
        "status": outcome.consent_status,
        "error_code": outcome.error_code,
        "updated_at": now,
    }
    if granted:
        row["granted_at"] = now
    # as_it_stands has already kept a granted consent from a failed repeat.
    connection.execute(_consent_upsert(connection.dialect.name, granted), row)


_UPSERTS: dict[tuple[str, bool], Any] = {}


def _consent_upsert(dialect: str, granted: bool) -> Any:
    """A real upsert (two first consents of one type must not both insert), built once.

    The row comes as parameters; a conflict takes its status, error code and time,
    and its ``granted_at`` only when the consent is granted.
    """
    statement = _UPSERTS.get((dialect, granted))
    if statement is None:
        dml = postgresql.insert if dialect == "postgresql" else sqlite.insert
        insert_row = dml(enterprise_consents)
        changed = ["status", "error_code", "updated_at", *(["granted_at"] if granted else [])]
        keys = [enterprise_consents.c.enterprise_id, enterprise_consents.c.consent_type]
        statement = insert_row.on_conflict_do_update(
            index_elements=keys,
            set_={name: insert_row.excluded[name] for name in changed},
        )
        _UPSERTS[(dialect, granted)] = statement
    return statement
