"""Background confirmation of consents Microsoft had not made visible yet.

Entra can take a while to create the service principal after an admin
consents. The callback retries briefly and then records ``pending``; this
module finishes the job later: one app-only token check per pending item per
pass, ``granted`` once the roles show up, ``CONSENT_NOT_CONFIRMED`` when the
grant is still invisible after ``PENDING_LIMIT``. Several workers may run: each
update is conditional on the item still being ``pending``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection, RowMapping, select, update

from broker import errors
from broker.db import action_items, enterprise_consents, enterprises
from broker.events import emit_event, record_audit
from broker.runtime import Runtime

PENDING_LIMIT = timedelta(hours=1)
log = logging.getLogger("ctt_broker.confirmations")


@dataclass(frozen=True)
class Pass:
    """What one pass over pending consents did."""

    checked: int
    granted: int
    failed: int


def confirm_pending(runtime: Runtime, *, limit: int = 100) -> Pass:
    """Check up to ``limit`` pending consents once each."""
    with runtime.engine.connect() as connection:
        rows = (
            connection.execute(
                select(
                    action_items.c.id,
                    action_items.c.action_type,
                    action_items.c.enterprise_id,
                    action_items.c.finished_at,
                    action_items.c.provider_id,
                    action_items.c.provider_state,
                    enterprises.c.tenant_id,
                )
                .join(enterprises, enterprises.c.id == action_items.c.enterprise_id)
                .where(action_items.c.status == "pending")
                .order_by(action_items.c.finished_at)
                .limit(limit)
            )
            .mappings()
            .all()
        )
    granted = failed = 0
    for row in rows:
        spec = runtime.catalog.get(row["action_type"])
        now = runtime.now()
        if now - row["finished_at"] > PENDING_LIMIT:
            failed += _finish(runtime, row, spec.consent_type, errors.ConsentNotConfirmed.code)
            continue
        try:
            check = runtime.ms.confirm_consent(spec, row["tenant_id"], attempts=1)
        except Exception as exc:  # one bad tenant must not stop the others
            code = exc.code if isinstance(exc, errors.BrokerError) else type(exc).__name__
            log.warning("consent check for %s failed: %s", row["id"], code)
            continue
        if (
            check.visible
            and check.tenant_id == row["tenant_id"]
            and set(spec.scopes) <= set(check.roles)
        ):
            granted += _finish(runtime, row, spec.consent_type, None)
        elif check.visible:
            failed += _finish(runtime, row, spec.consent_type, errors.ConsentNotConfirmed.code)
    return Pass(checked=len(rows), granted=granted, failed=failed)


def _finish(runtime: Runtime, row: RowMapping, consent_type: str | None, error: str | None) -> int:
    item_id, enterprise_id = row["id"], row["enterprise_id"]
    now = runtime.now()
    with runtime.engine.begin() as connection:
        moved = connection.execute(
            update(action_items)
            .where(action_items.c.id == item_id, action_items.c.status == "pending")
            .values(
                status="failed" if error else "completed",
                error_code=error,
                updated_at=now,
            )
        )
        if moved.rowcount != 1:
            return 0
        values: dict[str, object] = {
            "status": "failed" if error else "granted",
            "error_code": error,
            "updated_at": now,
        }
        if not error:
            values["granted_at"] = now
        connection.execute(
            update(enterprise_consents)
            .where(
                enterprise_consents.c.enterprise_id == enterprise_id,
                enterprise_consents.c.consent_type == consent_type,
            )
            .values(**values)
        )
        _announce(connection, runtime, row, consent_type, error)
    return 1


def _announce(
    connection: Connection,
    runtime: Runtime,
    row: RowMapping,
    consent_type: str | None,
    error: str | None,
) -> None:
    status = "failed" if error else "completed"
    data = {
        "actionItemId": row["id"],
        "actionType": row["action_type"],
        "enterpriseId": row["enterprise_id"],
        "status": status,
        "errorCode": error,
        "tenantId": row["tenant_id"],
        "state": row["provider_state"],
        "consent": {"consentType": consent_type, "status": "failed" if error else "granted"},
    }
    emit_event(connection, runtime, row["provider_id"], f"actionItem.{status}", data)
    emit_event(
        connection,
        runtime,
        row["provider_id"],
        "consent.failed" if error else "consent.granted",
        data,
    )
    record_audit(
        connection,
        runtime,
        row["provider_id"],
        "system",
        f"actionItem.{status}",
        enterprise_id=row["enterprise_id"],
        action_item_id=row["id"],
        details={"errorCode": error, "confirmedInBackground": True},
    )
