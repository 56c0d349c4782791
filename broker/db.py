"""Storage: the SQLAlchemy tables and the engine.

SQLite by default, PostgreSQL for production; the schema is created only by
the Alembic migrations in ``broker/migrations`` (a test checks this metadata
and the migrations agree). Every timestamp is stored and returned as UTC.
"""

from __future__ import annotations

import os
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


providers = Table(
    "providers",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("development", Boolean, nullable=False),
    Column("webhook_url", String(2048)),
    Column("share_refresh_token", Boolean, nullable=False, server_default="0"),
    Column("webhook_include_tokens", Boolean, nullable=False, server_default="0"),
    Column("created_at", UtcDateTime, nullable=False),
    # Branding on the admin's pages (set-branding): https URLs checked like webhooks.
    Column("display_name", String(100)),
    Column("portal_url", String(2048)),
    Column("logo_url", String(2048)),
)

provider_callbacks = Table(
    "provider_callbacks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("provider_id", String(40), ForeignKey("providers.id"), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("provider_id", "url"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("provider_id", String(40), ForeignKey("providers.id"), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime),
    Column("revoked_at", UtcDateTime),
)

enterprises = Table(
    "enterprises",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("provider_id", String(40), ForeignKey("providers.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("external_id", String(200), nullable=False),
    Column("tenant_id", String(36)),
    Column("registered_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("provider_id", "external_id"),
    # One Microsoft tenant is one enterprise per provider (NULLs never clash).
    UniqueConstraint("provider_id", "tenant_id"),
    Index(None, "provider_id", "id"),
)

enterprise_consents = Table(
    "enterprise_consents",
    metadata,
    Column("enterprise_id", String(40), ForeignKey("enterprises.id"), primary_key=True),
    Column("consent_type", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("error_code", String(64)),
    Column("granted_at", UtcDateTime),
    Column("updated_at", UtcDateTime, nullable=False),
)

action_items = Table(
    "action_items",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("handle_hash", String(64), nullable=False, unique=True),
    Column("provider_id", String(40), ForeignKey("providers.id"), nullable=False),
    Column("enterprise_id", String(40), ForeignKey("enterprises.id"), nullable=False),
    Column("action_type", String(64), nullable=False),
    Column("consent_type", String(64)),
    Column("callback_url", String(2048), nullable=False),
    Column("provider_state", Text),
    Column("result_delivery", String(16), nullable=False),
    Column("reregister", Boolean, nullable=False),
    # DEPLOY_TEAMS_APPS only: the JSON list of package ids chosen when the link was issued.
    Column("teams_app_package_ids", Text),
    Column("status", String(16), nullable=False),
    Column("error_code", String(64)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("opened_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Column("revoked_at", UtcDateTime),
    Column("updated_at", UtcDateTime, nullable=False),
    # The consent summary (newest request, live requests) and the enterprise's list.
    Index(None, "enterprise_id", "consent_type", "created_at"),
    Index(None, "enterprise_id", "status", "expires_at"),
    Index(None, "enterprise_id", "id"),
)


# One row per admin round trip: the state's jti and MSAL's secret flow dict
# (PKCE verifier, nonce). A callback first claims it with a short lease
# (``claim_token``, ``claimed_until``), then consumes it in the transaction that
# records the outcome, conditional on still holding the claim.
flows = Table(
    "flows",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("action_item_id", String(40), ForeignKey("action_items.id"), nullable=False, index=True),
    Column("msal_flow", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("consumed_at", UtcDateTime),
    Column("claim_token", String(64)),
    Column("claimed_until", UtcDateTime),
    # The X-Request-ID of the launch, so the callback's log line ties back to it.
    Column("launch_request_id", String(80)),
    # The abandoned-flow sweep: unconsumed flows whose claim ran out.
    Index(None, "consumed_at", "claimed_until"),
)

# One-time result codes: only the SHA-256 of the code is stored.
results = Table(
    "results",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("action_item_id", String(40), ForeignKey("action_items.id"), nullable=False, index=True),
    Column("provider_id", String(40), ForeignKey("providers.id"), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("redeemed_at", UtcDateTime),
)


# The outbox: every event a provider must learn of, written in the same
# transaction as the change it describes. Webhook delivery reads from here.
events = Table(
    "events",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("provider_id", String(40), ForeignKey("providers.id"), nullable=False),
    Column("type", String(64), nullable=False),
    Column("enterprise_id", String(40)),
    Column("action_item_id", String(40)),
    Column("payload", Text, nullable=False),
    # Token fields of the payload, AES-GCM sealed until delivered (broker.event_sealing).
    Column("sealed_tokens", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Index(None, "provider_id", "id"),
    Index(None, "provider_id", "type", "id"),
    Index(None, "enterprise_id", "id"),
)

# Who did what and when, for the provider to read.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("provider_id", String(40), ForeignKey("providers.id"), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("enterprise_id", String(40)),
    Column("action_item_id", String(40)),
    Column("details", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index(None, "provider_id", "id"),
    Index(None, "enterprise_id", "id"),
    Index(None, "action_item_id", "id"),
)

# Standard Webhooks signing secrets. Stored in the clear because HMAC needs
# them; several are live during a rotation overlap, and each signs every delivery.
provider_webhook_secrets = Table(
    "provider_webhook_secrets",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("provider_id", String(40), ForeignKey("providers.id"), nullable=False, index=True),
    Column("secret", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime),
)

# One row per event to push to the provider's webhook URL. A worker claims a
# due row with a lease by a conditional update on ``attempts``, so two workers
# never send the same attempt; ``round_attempts`` and ``give_up_at`` drive the
# retry schedule and restart on a manual redelivery.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("event_id", String(40), ForeignKey("events.id"), primary_key=True),
    Column("provider_id", String(40), ForeignKey("providers.id"), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("round_attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("give_up_at", UtcDateTime),
    Column("lease_until", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("delivered_at", UtcDateTime),
    Column("last_status_code", Integer),
    Column("last_error", String(200)),
    Index(None, "status", "next_attempt_at"),
    Index(None, "provider_id", "event_id"),
)

# Every attempt ever made, for the provider to inspect; numbered per event.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("event_id", String(40), ForeignKey("webhook_deliveries.event_id"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("url", String(2048), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("status_code", Integer),
    Column("error", String(200)),
    Column("outcome", String(16), nullable=False),
    UniqueConstraint("event_id", "attempt"),
)


def create_private_folder(path: Path) -> None:
    """Create ``path`` (and its parents) if missing; the folder itself gets mode 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _create_private_file(path: Path) -> None:
    # Created 0600 before SQLite opens it: SQLite gives its -wal and -shm files
    # the database file's mode, so tokens waiting in them are private too.
    create_private_folder(path.parent)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))


# A provider's Teams app packages, every version kept; the zip is stored as
# uploaded (it was validated then) so a deployment sends exactly those bytes.
teams_app_packages = Table(
    "teams_app_packages",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("provider_id", String(40), ForeignKey("providers.id"), nullable=False, index=True),
    Column("manifest_id", String(36), nullable=False, index=True),
    Column("version", String(256), nullable=False),
    Column("name", String(100), nullable=False),
    Column("manifest_version", String(16), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("provider_id", "manifest_id", "version"),
)

# What the broker last did with each app in an enterprise's Teams catalog.
enterprise_teams_apps = Table(
    "enterprise_teams_apps",
    metadata,
    Column("enterprise_id", String(40), ForeignKey("enterprises.id"), primary_key=True),
    Column("manifest_id", String(36), primary_key=True),
    Column("package_id", String(40)),
    Column("status", String(16), nullable=False),
    Column("catalog_app_id", String(64)),
    Column("version", String(256)),
    Column("error_code", String(64)),
    Column("action_item_id", String(40)),
    Column("updated_at", UtcDateTime, nullable=False),
)


# How long SQLite (and the writer gate in front of it) waits for another writer.
SQLITE_BUSY_SECONDS = 15.0
_WRITES = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)


class SqliteWriterGate:
    """One writing transaction at a time per engine, queued in Python rather than in SQLite.

    SQLite allows one writer; a second one waits in SQLite's busy handler, which
    sleeps in growing steps (up to 100 ms) and polls. Under load those sleeps became
    the tail: p99 ten times p50. The gate makes a connection take a lock at its first
    write and hold it until that transaction commits or rolls back, so waiting
    writers are woken at once, in turn. Reads never take it (WAL lets them run beside
    the writer). Other processes still meet SQLite's own busy handler.
    """

    def __init__(self, timeout: float = SQLITE_BUSY_SECONDS) -> None:
        self._lock = threading.Lock()
        self._holder: Any = None
        self._timeout = timeout

    def enter(self, connection: Any) -> None:
        """Called before a write on ``connection``; a no-op if it already holds the gate."""
        dbapi_connection = _driver_connection(connection)
        if self._holder is dbapi_connection:
            return
        # After the timeout the write goes on and SQLite's busy handler decides, as before.
        if self._lock.acquire(timeout=self._timeout):
            self._holder = dbapi_connection

    def leave(self, connection: Any) -> None:
        """Called once ``connection``'s transaction is over (commit, rollback, close)."""
        if self._holder is _driver_connection(connection):
            self._holder = None
            self._lock.release()


def _driver_connection(connection: Any) -> Any:
    # SQLAlchemy hands its hooks either the driver's connection or the pool's proxy of it.
    return getattr(connection, "dbapi_connection", connection)


def _gate_sqlite_writers(engine: Engine) -> None:
    gate = SqliteWriterGate()

    @event.listens_for(engine, "before_cursor_execute")
    def _before_write(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if _WRITES.match(statement):
            gate.enter(conn.connection)

    # The transaction ends in the driver's commit or rollback (the pool's reset on
    # return is a rollback too); the gate opens after it, never before.
    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_connection: Any) -> None:
        try:
            commit(dbapi_connection)
        finally:
            gate.leave(dbapi_connection)

    def do_rollback(dbapi_connection: Any) -> None:
        try:
            rollback(dbapi_connection)
        finally:
            gate.leave(dbapi_connection)

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]

    @event.listens_for(engine, "close")
    def _closed(dbapi_connection: Any, _record: Any) -> None:
        gate.leave(dbapi_connection)

    @event.listens_for(engine, "invalidate")
    def _invalidated(dbapi_connection: Any, _record: Any, _exception: Any) -> None:
        gate.leave(dbapi_connection)


def make_engine(url: str, pool_size: int = 10) -> Engine:
    """The engine for ``url``; SQLite gets foreign keys, WAL, a busy timeout, a writer gate.

    The pool keeps ``pool_size`` connections and opens no extra ones: connections
    opened for a burst and closed after it cost more than waiting for a free one
    (a profile under load showed the connects and closes).
    """
    if url.startswith("sqlite"):
        path = url.split("sqlite:///", 1)[-1]
        if path and path != ":memory:" and not path.startswith("file:"):
            _create_private_file(Path(path))
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_SECONDS, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=0,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        _gate_sqlite_writers(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=0)
