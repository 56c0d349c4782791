"""Provider branding for the admin's pages: display name, portal URL, logo URL.

Revision ID: 0009
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("providers") as batch:
        batch.add_column(sa.Column("display_name", sa.String(100), nullable=True))
        batch.add_column(sa.Column("portal_url", sa.String(2048), nullable=True))
        batch.add_column(sa.Column("logo_url", sa.String(2048), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("providers") as batch:
        batch.drop_column("logo_url")
        batch.drop_column("portal_url")
        batch.drop_column("display_name")
