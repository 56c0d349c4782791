"""Flow claims: a callback leases its flow before calling Microsoft.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from broker.db import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flows") as batch:
        batch.add_column(sa.Column("claim_token", sa.String(64), nullable=True))
        batch.add_column(sa.Column("claimed_until", UtcDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("flows") as batch:
        batch.drop_column("claimed_until")
        batch.drop_column("claim_token")
