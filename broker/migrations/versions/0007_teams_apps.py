"""Teams app packages, the catalog state per enterprise, and a deployment's package choice.

Revision ID: 0007
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from broker.db import UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("action_items", sa.Column("teams_app_package_ids", sa.Text(), nullable=True))
    op.create_table(
        "teams_app_packages",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("provider_id", sa.String(40), nullable=False),
        sa.Column("manifest_id", sa.String(36), nullable=False),
        sa.Column("version", sa.String(256), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("manifest_version", sa.String(16), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name="fk_teams_app_packages_provider_id_providers"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_teams_app_packages"),
        sa.UniqueConstraint(
            "provider_id",
            "manifest_id",
            "version",
            name="uq_teams_app_packages_provider_id_manifest_id_version",
        ),
    )
    op.create_index("ix_teams_app_packages_provider_id", "teams_app_packages", ["provider_id"])
    op.create_index("ix_teams_app_packages_manifest_id", "teams_app_packages", ["manifest_id"])
    op.create_table(
        "enterprise_teams_apps",
        sa.Column("enterprise_id", sa.String(40), nullable=False),
        sa.Column("manifest_id", sa.String(36), nullable=False),
        sa.Column("package_id", sa.String(40), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("catalog_app_id", sa.String(64), nullable=True),
        sa.Column("version", sa.String(256), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("action_item_id", sa.String(40), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["enterprise_id"],
            ["enterprises.id"],
            name="fk_enterprise_teams_apps_enterprise_id_enterprises",
        ),
        sa.PrimaryKeyConstraint("enterprise_id", "manifest_id", name="pk_enterprise_teams_apps"),
    )


def downgrade() -> None:
    op.drop_table("enterprise_teams_apps")
    op.drop_index("ix_teams_app_packages_manifest_id", table_name="teams_app_packages")
    op.drop_index("ix_teams_app_packages_provider_id", table_name="teams_app_packages")
    op.drop_table("teams_app_packages")
    with op.batch_alter_table("action_items") as batch:
        batch.drop_column("teams_app_package_ids")
