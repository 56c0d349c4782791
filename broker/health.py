"""Readiness: the database answers and carries the newest schema."""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from broker.errors import ServiceUnavailable
from broker.migrate import pending_revisions
from broker.runtime import Runtime


def check_database(runtime: Runtime) -> None:
    """Raise :class:`ServiceUnavailable` unless the database is reachable and current."""
    try:
        pending = pending_revisions(runtime.engine)
    except SQLAlchemyError:
        raise ServiceUnavailable("the database does not answer") from None
    if pending:
        raise ServiceUnavailable("the database schema is not current; run `ctt-broker db upgrade`")
