"""The event outbox and the audit trail.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from broker.db import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("providers") as batch:
        batch.add_column(
            sa.Column("webhook_include_tokens", sa.Boolean(), nullable=False, server_default="0")
        )
    op.create_table(
        "events",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("provider_id", sa.String(40), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("enterprise_id", sa.String(40), nullable=True),
        sa.Column("action_item_id", sa.String(40), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name="fk_events_provider_id_providers"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_provider_id_id", "events", ["provider_id", "id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("provider_id", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("enterprise_id", sa.String(40), nullable=True),
        sa.Column("action_item_id", sa.String(40), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name="fk_audit_log_provider_id_providers"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_provider_id_id", "audit_log", ["provider_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_provider_id_id", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_events_provider_id_id", table_name="events")
    op.drop_table("events")
    with op.batch_alter_table("providers") as batch:
        batch.drop_column("webhook_include_tokens")
