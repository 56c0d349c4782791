"""Structured logs and the request id that ties a flow's requests together.

Every log record is one JSON line (python-json-logger). The request being
served is held in a context variable, so any module can add a field to its
access line with :func:`annotate` without knowing about the web framework, and
every record logged while serving it carries its ``requestId``.

What must never be logged: link handles, authorization and result codes, API
keys, tokens, webhook secrets, state JWTs, cookies. So the access line names
the operation (``operationId``), never the path or the query, and the fields
that may be annotated are a closed list of identifiers.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's id is accepted when it is short and plain: no spaces, quotes or
# control characters that could forge a second log line or carry a secret-sized blob.
REQUEST_ID_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{7,63}")
ACCESS_LOGGER = "ctt_broker.access"

# Identifiers an access line may carry besides the fixed ones; none of them is a secret.
ANNOTATIONS = frozenset(
    {"providerId", "actionItemId", "actionType", "launchRequestId", "errorCode"}
)


@dataclass
class RequestLog:
    """What is known about the request being served; becomes its access line."""

    request_id: str
    fields: dict[str, str] = field(default_factory=dict)


_current: ContextVar[RequestLog | None] = ContextVar("ctt_request_log", default=None)


def new_request_id() -> str:
    """A fresh request id (128 random bits, URL-safe)."""
    return "req_" + secrets.token_urlsafe(16)


def accept_request_id(offered: str | None) -> str:
    """The caller's ``X-Request-ID`` when its shape is safe, else a fresh id."""
    if offered is not None and REQUEST_ID_SHAPE.fullmatch(offered):
        return offered
    return new_request_id()


@contextmanager
def serving(request_id: str) -> Iterator[RequestLog]:
    """Make ``request_id`` the current request for the duration of the block."""
    record = RequestLog(request_id)
    token = _current.set(record)
    try:
        yield record
    finally:
        _current.reset(token)


def current_request_id() -> str | None:
    """The id of the request being served, or None outside a request."""
    record = _current.get()
    return record.request_id if record is not None else None


def annotate(**fields: str | None) -> None:
    """Add identifiers (see :data:`ANNOTATIONS`) to the current request's access line."""
    record = _current.get()
    if record is None:
        return
    for name, value in fields.items():
        if name not in ANNOTATIONS:
            raise ValueError(f"{name} is not a loggable field")
        if value:
            record.fields[name] = value


def access_line(
    record: RequestLog,
    *,
    method: str,
    operation_id: str | None,
    status: int,
    duration_seconds: float,
) -> dict[str, Any]:
    """The fields of one request's access line."""
    return {
        "requestId": record.request_id,
        "method": method,
        "operationId": operation_id,
        "status": status,
        "durationMs": round(duration_seconds * 1000, 1),
        **record.fields,
    }


class _RequestIdFilter(logging.Filter):
    """Stamp every record logged while serving a request with its id."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id()
        if request_id is not None and not hasattr(record, "requestId"):
            record.requestId = request_id
        return True


def json_handler(stream: TextIO | None = None) -> logging.Handler:
    """A handler writing one JSON object per line, stamped with the request id."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        )
    )
    handler.addFilter(_RequestIdFilter())
    return handler


# Servers' own loggers: their access lines would print the query string (the
# callback's carries the state and the code), so ours replaces them.
_QUIET = ("uvicorn.access", "gunicorn.access")
# Libraries whose INFO and DEBUG lines print secrets: httpx and httpcore whole
# URLs (a code, a state), Connexion the request path (a link handle), MSAL its
# auth code flow (the code and the PKCE verifier), SQLAlchemy's echo the bound
# parameters. They stay at WARNING whatever the level; tests/flow/test_logs.py
# finds each of these leaks when this list is cut.
_SECRET_PRINTERS = ("httpx", "httpcore", "urllib3", "hpack", "connexion", "msal", "sqlalchemy")


def configure_logging(level: str, stream: TextIO | None = None) -> None:
    """JSON lines on the root logger at ``level``; server access logs off."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "ctt_json", False):
            root.removeHandler(handler)
    handler = json_handler(stream)
    handler.ctt_json = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "gunicorn.error"):
        server = logging.getLogger(name)
        server.handlers.clear()
        server.propagate = True
    for name in _SECRET_PRINTERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in _QUIET:
        quiet = logging.getLogger(name)
        quiet.handlers.clear()
        quiet.propagate = False
        quiet.disabled = True


def log_access(fields: Mapping[str, Any]) -> None:
    """Write one request's access line."""
    logging.getLogger(ACCESS_LOGGER).info("request", extra=dict(fields))
