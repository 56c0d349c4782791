"""The one place errors become HTTP answers: ``application/problem+json``.

``broker`` raises :class:`broker.errors.BrokerError` subclasses that know their
status and code. Connexion and Starlette raise their own exceptions for
validation, authentication and routing; these are translated to the same
shape and given one of our codes, so a client never sees a problem without a
``code`` and never a bare 500.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from starlette.exceptions import HTTPException

from broker import errors, providers
from broker.health import database_unreachable
from broker.providers import Branding
from handlers import i18n, pages
from handlers.context import current_runtime

log = logging.getLogger("ctt_broker.problems")

PROBLEM_TYPE = "urn:ctt-broker:problem:"
BROWSER_PATHS = ("/actions/", "/oauth/")
MEDIA_TYPE = "application/problem+json"
DEFAULT_RETRY_AFTER_SECONDS = 5

# Connexion reports which field failed as "... - 'field.path'"; a few fields
# have a code of their own.
_FIELD_IN_DETAIL = re.compile(r" - '([^']+)'$")
_PARAMETER_IN_DETAIL = re.compile(r"(?:parameter|parameter\(s\)) '?([A-Za-z0-9_]+)")
_FIELD_ERRORS: dict[str, type[errors.BrokerError]] = {
    "actionType": errors.UnknownActionType,
    "state": errors.InvalidProviderState,
}
_STATUS_ERRORS: dict[int, type[errors.BrokerError]] = {
    401: errors.Unauthenticated,
    403: errors.Unauthenticated,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
}


def problem_document(error: errors.BrokerError, field: str | None = None) -> dict[str, Any]:
    """The problem+json body for ``error``."""
    document: dict[str, Any] = {
        "type": PROBLEM_TYPE + error.code,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
    }
    if field:
        document["field"] = field
    if error.extra.get("defects"):
        document["defects"] = list(error.extra["defects"])
    if error.extra.get("enterprise_id"):
        document["enterpriseId"] = error.extra["enterprise_id"]
    if "allowed_callbacks" in error.extra:
        document["allowedCallbacks"] = list(error.extra["allowed_callbacks"])
        document["nearMisses"] = list(error.extra.get("near_misses", ()))
    return document


def problem_headers(error: errors.BrokerError) -> dict[str, str]:
    """Headers every problem answer carries."""
    headers = {"Cache-Control": "no-store"}
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="ctt-broker"'
    retry_after = error.extra.get("retry_after")
    if retry_after is None and error.status == 503:
        retry_after = DEFAULT_RETRY_AFTER_SECONDS
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after))
    return headers


def respond(
    path: str,
    error: errors.BrokerError,
    field: str | None = None,
    allow: Sequence[str] = (),
    accept_language: str | None = None,
    branding: Branding | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """The one rendering of an error: status, headers and body.

    The admin's browser paths get a readable page in the admin's language
    (never JSON, never a redirect); everything else gets problem+json. Both
    carry the full set of security headers, whichever layer answers.
    """
    if path.startswith(BROWSER_PATHS):
        error = for_the_admin(path, error)
        body = pages.error_page(error, i18n.negotiate(accept_language), branding).encode()
        logo = branding.logo_url if branding else None
        specific = {**pages.page_headers(image=logo), **problem_headers(error)}
    else:
        body = json.dumps(problem_document(error, field)).encode()
        specific = {"Content-Type": MEDIA_TYPE, **problem_headers(error)}
    headers = {**pages.BASE_HEADERS, **specific}
    if error.status == 405 and allow:
        headers["Allow"] = ", ".join(allow)
    return error.status, headers, body


def for_the_admin(path: str, error: errors.BrokerError) -> errors.BrokerError:
    """The error an admin's page reports when the spec refused the request itself.

    An API code (``INVALID_STATE_PARAMETER``) explains nothing to an admin. The
    only parameter of a link is its handle: one the spec refuses names no link.
    The callback's parameters are Microsoft's return: without them (``state``
    missing, say) the page was opened directly.
    """
    if type(error) not in (errors.InvalidRequest, errors.InvalidProviderState):
        return error
    if path.startswith("/actions/"):
        return errors.LinkNotFound(error.detail)
    return errors.ReturnPageOpenedDirectly(error.detail)


def home_page(
    accept: str | None, accept_language: str | None
) -> tuple[int, dict[str, str], bytes] | None:
    """The root's answer for a browser (it asks for HTML); None for API clients."""
    if "text/html" not in (accept or ""):
        return None
    body = pages.home_page(i18n.negotiate(accept_language)).encode()
    return 200, {**pages.BASE_HEADERS, **pages.page_headers()}, body


def _branding_for(error: errors.BrokerError) -> Branding | None:
    """The branding of the provider an admin page is about, when the error names one."""
    provider_id = error.extra.get("provider_id")
    if not isinstance(provider_id, str):
        return None
    try:
        return providers.branding_of(current_runtime(), provider_id)
    except Exception:  # the page must render even when the database does not answer
        log.warning("provider branding unavailable for an error page")
        return None


def translate(exc: Exception) -> tuple[errors.BrokerError, str | None]:
    """Our error (and the faulty field, if known) for any exception."""
    if isinstance(exc, errors.BrokerError):
        return exc, exc.extra.get("field")
    if isinstance(exc, UnicodeDecodeError):
        # Connexion decodes JSON bodies without catching this (a 500 otherwise).
        return errors.InvalidRequestBody("the request body is not valid UTF-8"), None
    if database_unreachable(exc):
        return errors.ServiceUnavailable(
            "the database does not answer; try again in a moment"
        ), None
    if isinstance(exc, ProblemException | HTTPException):
        status = exc.status if isinstance(exc, ProblemException) else exc.status_code
        detail = str(getattr(exc, "detail", None) or getattr(exc, "title", "") or "")
        # jsonschema appends the whole failing schema after a blank line: keep the summary.
        detail = detail.split("\n\n", 1)[0].strip()
        if status == 400:
            return _bad_request(detail)
        error_class = _STATUS_ERRORS.get(status)
        if error_class is not None:
            return error_class(detail or error_class.title), None
    return errors.InternalError("an unexpected error occurred"), None


def _bad_request(detail: str) -> tuple[errors.BrokerError, str | None]:
    field_match = _FIELD_IN_DETAIL.search(detail) or _PARAMETER_IN_DETAIL.search(detail)
    field = field_match.group(1) if field_match else None
    if field in _FIELD_ERRORS:
        return _FIELD_ERRORS[field](detail), field
    if detail.startswith(("Expecting", "Extra data", "Invalid control character", "Unterminated")):
        return errors.InvalidRequestBody(f"the request body is not valid JSON: {detail}"), None
    return errors.InvalidRequest(detail or "the request is invalid"), field


class MethodTable:
    """Which methods each spec path allows, for the ``Allow`` header of a 405.

    Starlette only knows the methods of the one route it matched, but the spec
    may put several operations on one path.
    """

    def __init__(self, spec_paths: dict[str, dict[str, Any]]) -> None:
        self._routes = [
            (
                re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$"),
                sorted(m.upper() for m in item if m in ("get", "post", "put", "patch", "delete")),
            )
            for path, item in spec_paths.items()
        ]

    def allowed(self, path: str) -> list[str]:
        """The methods the spec allows on ``path`` (empty when no path matches)."""
        for pattern, methods in self._routes:
            if pattern.match(path):
                return methods
        return []


def make_handler(methods: MethodTable) -> Any:
    """The Connexion error handler for every exception class."""

    def handle(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        error, field = translate(exc)
        if error.status >= 500:
            log.error("request failed: %s", type(exc).__name__, exc_info=exc)
        path = request.url.path
        language = request.headers.get("accept-language")
        answer = None
        if path == "/" and request.method == "GET" and isinstance(error, errors.NotFound):
            answer = home_page(request.headers.get("accept"), language)
        status, headers, body = answer or respond(
            path, error, field, methods.allowed(path), language, _branding_for(error)
        )
        content_type = headers.pop("Content-Type")
        return ConnexionResponse(
            status_code=status,
            mimetype=content_type,
            content_type=content_type,
            body=body,
            headers=headers,
        )

    return handle
