"""Event token fields sealed apart from the payload until delivered; coarse attempt errors.

Revision ID: 0006
Revises: 0004

Events written before this revision may hold tokens in clear in ``payload``;
the upgrade strips them (the webhook of such an event is sent without them).
Attempt errors written before it carry the network's own message; the upgrade
turns them into the coarse classes the API now reports.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TOKEN_FIELDS = ("authenticationResult",)
_ERROR_CLASS_BY_OUTCOME = {
    "timeout": "timeout",
    "rejected": "http_status",
    "refused": "blocked",
    "network_error": "network",
}


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("sealed_tokens", sa.Text(), nullable=True))
    _strip_clear_tokens()
    _coarsen_attempt_errors()


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("sealed_tokens")


def _strip_clear_tokens() -> None:
    events = sa.table("events", sa.column("id", sa.String), sa.column("payload", sa.Text))
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(events.c.id, events.c.payload).where(
            events.c.payload.like('%"authenticationResult"%')
        )
    ).all()
    for event_id, payload in rows:
        document = json.loads(payload)
        data = document.get("data") or {}
        if not any(name in data for name in _TOKEN_FIELDS):
            continue
        document["data"] = {k: v for k, v in data.items() if k not in _TOKEN_FIELDS}
        connection.execute(
            events.update().where(events.c.id == event_id).values(payload=json.dumps(document))
        )


def _coarsen_attempt_errors() -> None:
    attempts = sa.table(
        "webhook_attempts", sa.column("outcome", sa.String), sa.column("error", sa.String)
    )
    for outcome, error_class in _ERROR_CLASS_BY_OUTCOME.items():
        op.execute(
            attempts.update()
            .where(attempts.c.outcome == outcome, attempts.c.error.is_not(None))
            .values(error=error_class)
        )
    deliveries = sa.table(
        "webhook_deliveries",
        sa.column("last_error", sa.String),
        sa.column("last_status_code", sa.Integer),
    )
    op.execute(
        deliveries.update()
        .where(deliveries.c.last_error.is_not(None))
        .values(
            last_error=sa.case(
                (deliveries.c.last_status_code.is_not(None), "http_status"), else_="network"
            )
        )
    )
