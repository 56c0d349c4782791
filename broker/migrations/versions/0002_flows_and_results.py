"""Admin flows, one-time result codes, and the provider's refresh-token choice.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from broker.db import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("providers") as batch:
        batch.add_column(
            sa.Column("share_refresh_token", sa.Boolean(), nullable=False, server_default="0")
        )
    op.create_table(
        "flows",
        sa.Column("jti", sa.String(64), nullable=False),
        sa.Column("action_item_id", sa.String(40), nullable=False),
        sa.Column("msal_flow", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("consumed_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["action_item_id"], ["action_items.id"], name="fk_flows_action_item_id_action_items"
        ),
        sa.PrimaryKeyConstraint("jti", name="pk_flows"),
    )
    op.create_index("ix_flows_action_item_id", "flows", ["action_item_id"])
    op.create_table(
        "results",
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("action_item_id", sa.String(40), nullable=False),
        sa.Column("provider_id", sa.String(40), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("redeemed_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["action_item_id"],
            ["action_items.id"],
            name="fk_results_action_item_id_action_items",
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name="fk_results_provider_id_providers"
        ),
        sa.PrimaryKeyConstraint("code_hash", name="pk_results"),
    )
    op.create_index("ix_results_action_item_id", "results", ["action_item_id"])


def downgrade() -> None:
    op.drop_index("ix_results_action_item_id", table_name="results")
    op.drop_table("results")
    op.drop_index("ix_flows_action_item_id", table_name="flows")
    op.drop_table("flows")
    with op.batch_alter_table("providers") as batch:
        batch.drop_column("share_refresh_token")
