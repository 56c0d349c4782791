"""The schema comes from Alembic migrations, and they match the code's tables."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from broker.db import make_engine, metadata
from broker.migrate import pending_revisions, upgrade_database
from tests.conftest import Database


def test_migrated_schema_matches_the_tables_the_code_uses(database: Database) -> None:
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []


def test_database_is_current_and_upgrading_again_changes_nothing(database: Database) -> None:
    assert pending_revisions(database.engine) == []
    upgrade_database(database.engine)
    assert pending_revisions(database.engine) == []


def test_fresh_sqlite_file_reports_pending_until_upgraded(tmp_path: object) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/fresh.sqlite3")
    assert pending_revisions(engine) == [
        "0010",
        "0009",
        "0008",
        "0007",
        "0006",
        "0005",
        "0004",
        "0003",
        "0002",
        "0001",
    ]
    upgrade_database(engine)
    assert pending_revisions(engine) == []
    engine.dispose()
