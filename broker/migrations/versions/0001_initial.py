"""Initial schema: providers, API keys, callbacks, enterprises, consents, action items.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from broker.db import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "providers",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("development", sa.Boolean(), nullable=False),
        sa.Column("webhook_url", sa.String(2048), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_providers"),
        sa.UniqueConstraint("name", name="uq_providers_name"),
    )
    op.create_table(
        "provider_callbacks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("provider_id", sa.String(40), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name="fk_provider_callbacks_provider_id_providers"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_provider_callbacks"),
        sa.UniqueConstraint("provider_id", "url", name="uq_provider_callbacks_provider_id_url"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("provider_id", sa.String(40), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=True),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name="fk_api_keys_provider_id_providers"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_provider_id", "api_keys", ["provider_id"])
    op.create_table(
        "enterprises",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("provider_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("external_id", sa.String(200), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=True),
        sa.Column("registered_at", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name="fk_enterprises_provider_id_providers"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_enterprises"),
        sa.UniqueConstraint(
            "provider_id", "external_id", name="uq_enterprises_provider_id_external_id"
        ),
        sa.UniqueConstraint(
            "provider_id", "tenant_id", name="uq_enterprises_provider_id_tenant_id"
        ),
    )
    op.create_table(
        "enterprise_consents",
        sa.Column("enterprise_id", sa.String(40), nullable=False),
        sa.Column("consent_type", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("granted_at", UtcDateTime(), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["enterprise_id"],
            ["enterprises.id"],
            name="fk_enterprise_consents_enterprise_id_enterprises",
        ),
        sa.PrimaryKeyConstraint("enterprise_id", "consent_type", name="pk_enterprise_consents"),
    )
    op.create_table(
        "action_items",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("handle_hash", sa.String(64), nullable=False),
        sa.Column("provider_id", sa.String(40), nullable=False),
        sa.Column("enterprise_id", sa.String(40), nullable=False),
        sa.Column("action_type", sa.String(64), nullable=False),
        sa.Column("consent_type", sa.String(64), nullable=True),
        sa.Column("callback_url", sa.String(2048), nullable=False),
        sa.Column("provider_state", sa.Text(), nullable=True),
        sa.Column("result_delivery", sa.String(16), nullable=False),
        sa.Column("reregister", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("opened_at", UtcDateTime(), nullable=True),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["enterprise_id"], ["enterprises.id"], name="fk_action_items_enterprise_id_enterprises"
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name="fk_action_items_provider_id_providers"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_action_items"),
        sa.UniqueConstraint("handle_hash", name="uq_action_items_handle_hash"),
    )
    op.create_index(
        "ix_action_items_enterprise_id_consent_type",
        "action_items",
        ["enterprise_id", "consent_type"],
    )


def downgrade() -> None:
    op.drop_index("ix_action_items_enterprise_id_consent_type", table_name="action_items")
    op.drop_table("action_items")
    op.drop_table("enterprise_consents")
    op.drop_table("enterprises")
    op.drop_index("ix_api_keys_provider_id", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("provider_callbacks")
    op.drop_table("providers")
