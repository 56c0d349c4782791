"""Indexes that keep every request's cost independent of history.

An enterprise's consent summary reads, per consent type, its newest request and
whether a live one exists; the provider's lists filter by enterprise, type or
action item and page by id; the abandoned-flow sweep looks for unconsumed flows.
Each now seeks an index instead of reading every row the enterprise or provider
ever wrote.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# (table, columns): named by the metadata's convention, ix_<table>_<columns>.
INDEXES = [
    ("action_items", ["enterprise_id", "consent_type", "created_at"]),
    ("action_items", ["enterprise_id", "status", "expires_at"]),
    ("action_items", ["enterprise_id", "id"]),
    ("enterprises", ["provider_id", "id"]),
    ("events", ["provider_id", "type", "id"]),
    ("events", ["enterprise_id", "id"]),
    ("audit_log", ["enterprise_id", "id"]),
    ("audit_log", ["action_item_id", "id"]),
    ("flows", ["consumed_at", "claimed_until"]),
]


def _name(table: str, columns: list[str]) -> str:
    return f"ix_{table}_{'_'.join(columns)}"


def upgrade() -> None:
    # The newest-request index covers every query the old one served.
    op.drop_index("ix_action_items_enterprise_id_consent_type", table_name="action_items")
    for table, columns in INDEXES:
        op.create_index(_name(table, columns), table, columns)


def downgrade() -> None:
    for table, columns in reversed(INDEXES):
        op.drop_index(_name(table, columns), table_name=table)
    op.create_index(
        "ix_action_items_enterprise_id_consent_type",
        "action_items",
        ["enterprise_id", "consent_type"],
    )
