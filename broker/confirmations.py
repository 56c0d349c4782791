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

from sqlalchemy import RowMapping, select

from broker import errors
from broker.catalog import ActionSpec
from broker.db import action_items, enterprises
from broker.lifecycle import (
    ConsentOutcome,
    Outcome,
    consent_payload,
    load_finished_item,
    settle_pending,
)
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
            failed += _finish(runtime, row, spec, (), errors.ConsentNotConfirmed.code)
            continue
        try:
            check = runtime.microsoft.confirm_consent(spec, row["tenant_id"], attempts=1)
        except Exception as exc:  # one bad tenant must not stop the others
            code = exc.code if isinstance(exc, errors.BrokerError) else type(exc).__name__
            log.warning("consent check for %s failed: %s", row["id"], code)
            continue
        if (
            check.visible
            and check.tenant_id == row["tenant_id"]
            and set(spec.scopes) <= set(check.roles)
        ):
            granted += _finish(runtime, row, spec, check.roles, None)
        elif check.visible:
            failed += _finish(runtime, row, spec, check.roles, errors.ConsentNotConfirmed.code)
    return Pass(checked=len(rows), granted=granted, failed=failed)


def _finish(
    runtime: Runtime, row: RowMapping, spec: ActionSpec, roles: tuple[str, ...], error: str | None
) -> int:
    failure = errors.ConsentNotConfirmed("the grant is still not visible") if error else None
    consent: ConsentOutcome = "failed" if error else "granted"
    outcome = Outcome(
        status="failed" if error else "completed",
        error=failure,
        tenant_id=row["tenant_id"],
        consent_type=spec.consent_type,
        consent_status=consent,
        payload=consent_payload(spec.consent_type, spec.scopes, consent, roles),
    )
    with runtime.engine.begin() as connection:
        item = load_finished_item(connection, row["id"])
        return 1 if settle_pending(connection, runtime, item, outcome) else 0
