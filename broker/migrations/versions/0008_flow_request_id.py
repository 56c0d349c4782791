"""The request id of the launch that opened a flow, so its callback's log line can name it.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("flows", sa.Column("launch_request_id", sa.String(80), nullable=True))


def downgrade() -> None:
    op.drop_column("flows", "launch_request_id")
