"""Event token fields sealed apart from the payload until delivered.

Revision ID: 0006
Revises: 0004

Events written before this revision may hold tokens in clear in ``payload``;
the upgrade strips them (the webhook of such an event is sent without them).
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None

_TOKEN_FIELDS = ("authenticationResult",)


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("sealed_tokens", sa.Text(), nullable=True))
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


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("sealed_tokens")
