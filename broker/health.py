"""Liveness and readiness: the process answers; the database, its schema and the keys are there."""

from __future__ import annotations

from sqlalchemy import exc as sqlalchemy_exc
from sqlalchemy.exc import SQLAlchemyError

from broker.errors import ServiceUnavailable
from broker.migrate import pending_revisions
from broker.runtime import Runtime

# Connection-level failures: the database is away, not our code wrong.
_UNREACHABLE = (
    sqlalchemy_exc.OperationalError,
    sqlalchemy_exc.DisconnectionError,
    sqlalchemy_exc.InterfaceError,
    sqlalchemy_exc.TimeoutError,
)


def database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached (a 503, never a 500)."""
    return isinstance(exc, _UNREACHABLE)


def check_database(runtime: Runtime) -> None:
    """Raise :class:`ServiceUnavailable` unless the database is reachable and current."""
    try:
        pending = pending_revisions(runtime.engine)
    except SQLAlchemyError:
        raise ServiceUnavailable("the database does not answer") from None
    if pending:
        raise ServiceUnavailable("the database schema is not current; run `ctt-broker db upgrade`")


def check_ready(runtime: Runtime) -> dict[str, str]:
    """What an orchestrator needs before sending traffic; raise :class:`ServiceUnavailable` if not.

    The database answers, its schema is current, and the keys are loaded: the
    state and result keys, and a credential for every app of the catalog.
    """
    check_database(runtime)
    credentials = runtime.credentials
    if credentials is None:
        raise ServiceUnavailable("the keys are not loaded")
    missing = sorted({spec.app for spec in runtime.catalog.actions} - set(credentials.apps))
    if missing:
        raise ServiceUnavailable(f"no credentials for the apps {', '.join(missing)}")
    return {"status": "ok", "database": "ok", "schema": "ok", "keys": "ok"}
