"""ASGI middleware that wraps the whole app, errors included.

``create_app`` adds them in this order, and Connexion puts each one just
before its exception middleware, so the first added runs first:

- :class:`RequestLogMiddleware` accepts or creates the ``X-Request-ID``, returns
  it, writes the request's one JSON access line and counts it in the metrics;
- :class:`SecurityHeadersMiddleware` adds the headers every answer carries;
- :class:`RequestGuard` refuses oversized heads, bounds concurrency and
  applies the rate limits, before anything parses the query or body;
- :class:`PathGuard` answers paths that must not be routed (admin typos,
  trailing slashes that Starlette would redirect using the Host header);
- :class:`BodyGuardMiddleware` bounds request bodies and refuses bodies that
  claim to be JSON but are not valid UTF-8 JSON;
- :class:`RuntimeMiddleware` puts the app's runtime into every request scope.

Every refusal is rendered by :func:`handlers.problems.respond`, the same
renderer Connexion's error handler uses.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from anyio import CapacityLimiter, to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker import errors, metrics, observability
from broker.ratelimits import Network, RateLimits, Verdict, client_ip
from broker.runtime import Runtime
from handlers import pages
from handlers.context import (
    CLIENT_IP_KEY,
    LIMITS_KEY,
    MICROSOFT_LIMITER_KEY,
    OVERFLOW_KEY,
    REQUEST_RUNTIME,
    SCOPE_KEY,
)
from handlers.problems import BROWSER_PATHS, respond

CALLBACK_PATH = "/oauth/callback"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class RouteLimits:
    """How big a request head may be on one kind of route."""

    max_parameters: int
    max_query_bytes: int
    max_header_fields: int
    max_header_field_bytes: int
    max_header_bytes: int


# Microsoft's return carries a signed state, an authorization code, a session
# state, client info and possibly a long error description (in the query for
# GET, in the form body for form_post).
CALLBACK_LIMITS = RouteLimits(
    max_parameters=48,
    max_query_bytes=24 * 1024,
    max_header_fields=64,
    max_header_field_bytes=8 * 1024,
    max_header_bytes=16 * 1024,
)
# Every other route: the spec's longest query has six short parameters.
DEFAULT_LIMITS = RouteLimits(
    max_parameters=16,
    max_query_bytes=2 * 1024,
    max_header_fields=48,
    max_header_field_bytes=8 * 1024,
    max_header_bytes=16 * 1024,
)
# The request head the HTTP server itself accepts: the largest route's query
# and headers plus the request line. The guard then applies the per-route limits.
MAX_REQUEST_HEAD_BYTES = CALLBACK_LIMITS.max_query_bytes + CALLBACK_LIMITS.max_header_bytes + 1024


def limits_for(path: str) -> RouteLimits:
    """The head limits of the route at ``path``."""
    return CALLBACK_LIMITS if path == CALLBACK_PATH else DEFAULT_LIMITS


def parameter_count(query: bytes) -> int:
    """How many parameters a query string carries, counted without parsing it.

    ``;`` counts as a separator too, so no parser that splits on it sees more.
    """
    if not query:
        return 0
    return query.count(b"&") + query.count(b";") + 1


def state_only(query: bytes) -> bytes:
    """The ``state`` pairs of a query, found by one linear scan (no parser runs on it)."""
    pairs = query.replace(b";", b"&").split(b"&")
    return b"&".join(pair for pair in pairs if pair.startswith(b"state="))


def head_problem(
    path: str, query: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> errors.BrokerError | None:
    """Why this request head is over its route's limits, or None."""
    limits = limits_for(path)
    if len(query) > limits.max_query_bytes:
        return errors.UriTooLong(f"the query string exceeds {limits.max_query_bytes} bytes")
    if parameter_count(query) > limits.max_parameters:
        return errors.TooManyParameters(
            f"the query carries more than {limits.max_parameters} parameters"
        )
    if len(headers) > limits.max_header_fields:
        return errors.HeadersTooLarge(
            f"the request has more than {limits.max_header_fields} header fields"
        )
    total = 0
    for name, value in headers:
        size = len(name) + len(value)
        if size > limits.max_header_field_bytes:
            return errors.HeadersTooLarge(
                f"a header field exceeds {limits.max_header_field_bytes} bytes"
            )
        total += size
    if total > limits.max_header_bytes:
        return errors.HeadersTooLarge(f"the request headers exceed {limits.max_header_bytes} bytes")
    return None


class RequestGuard:
    """Limits before parsing: head sizes, concurrency per bulkhead, and rate limits.

    Admin pages and the provider API have separate concurrency budgets, so a
    flood of slow admin callbacks cannot make the API answer 503, and the other
    way round. Over budget answers 503 at once rather than queueing.
    """

    def __init__(
        self,
        app: ASGIApp,
        rate_limits: RateLimits,
        trusted_proxies: Sequence[Network],
        max_concurrent_requests: int,
        microsoft_limiter: CapacityLimiter,
    ) -> None:
        self.app = app
        self.rate_limits = rate_limits
        self.trusted_proxies = tuple(trusted_proxies)
        self.max_concurrent_requests = max_concurrent_requests
        self.microsoft_limiter = microsoft_limiter
        self.in_flight = {"admin": 0, "api": 0}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        query: bytes = scope.get("query_string", b"")
        problem = head_problem(path, query, headers)
        if path == CALLBACK_PATH and isinstance(
            problem, errors.UriTooLong | errors.TooManyParameters
        ):
            # Microsoft's return must still end in an outcome (the item must not stay
            # open): keep only the state and let the flow record the rest as malformed.
            scope = {**scope, "query_string": state_only(query), OVERFLOW_KEY: problem.detail}
            problem = head_problem(path, scope["query_string"], headers)
        if problem is not None:
            await send_problem(send, scope, problem)
            return
        peer = scope.get("client")
        forwarded = [v.decode("latin-1") for k, v in headers if k.lower() == b"x-forwarded-for"]
        ip = client_ip(peer[0] if peer else None, forwarded, self.trusted_proxies)
        scope[CLIENT_IP_KEY] = ip
        scope[LIMITS_KEY] = self.rate_limits
        scope[MICROSOFT_LIMITER_KEY] = self.microsoft_limiter
        admin = path.startswith(BROWSER_PATHS)
        if admin:
            problem = await self._admin_rate_problem(path, ip)
            if problem is not None:
                await send_problem(send, scope, problem)
                return
        bulkhead = "admin" if admin else "api"
        if self.in_flight[bulkhead] >= self.max_concurrent_requests:
            busy = errors.ServiceUnavailable(
                "the broker is busy; try again in a moment", retry_after=1
            )
            await send_problem(send, scope, busy)
            return
        self.in_flight[bulkhead] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight[bulkhead] -= 1

    async def _admin_rate_problem(self, path: str, ip: str) -> errors.BrokerError | None:
        verdict = await self._hit("admin", ip)
        if verdict.allowed and path.startswith("/actions/"):
            # Per link too: one link clicked in a loop must not write a flow per click.
            verdict = await self._hit("link", path[len("/actions/") :])
        if verdict.allowed:
            return None
        return errors.RateLimited(
            "too many requests; try again later", retry_after=verdict.retry_after
        )

    async def _hit(self, bucket: str, key: str) -> Verdict:
        if self.rate_limits.uses_network:
            return await to_thread.run_sync(self.rate_limits.hit, bucket, key)
        return self.rate_limits.hit(bucket, key)


class PathGuard:
    """Paths that must not reach the router.

    Admin-facing paths are exact: anything else there is the link-not-found
    page. Elsewhere a trailing slash is a 404: Starlette would answer it with a
    307 to an absolute URL built from the ``Host`` header, which an attacker
    chooses. The admin's browser must never be redirected by a typo either.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = path_problem(scope["path"])
            if problem is not None:
                await send_problem(send, scope, problem)
                return
        await self.app(scope, receive, send)


def path_problem(path: str) -> errors.BrokerError | None:
    """Why ``path`` must be refused before routing, or None."""
    if path.startswith(BROWSER_PATHS):
        handle = path[len("/actions/") :] if path.startswith("/actions/") else None
        if (handle is not None and (not handle or "/" in handle)) or (
            handle is None and path != CALLBACK_PATH
        ):
            return errors.LinkNotFound("this link is not valid")
        return None
    if path != "/" and path.endswith("/") and path != "/ui/":
        return errors.NotFound("no such route")
    return None


class RuntimeMiddleware:
    """Expose the app's :class:`Runtime` to handlers through the scope."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope[SCOPE_KEY] = self.runtime
        token = REQUEST_RUNTIME.set(self.runtime)
        try:
            await self.app(scope, receive, send)
        finally:
            REQUEST_RUNTIME.reset(token)


class BodyGuardMiddleware:
    """Read the body first (it is small by construction) and check it.

    Bodies over ``max_body_bytes`` get 413 whether or not they declare a
    Content-Length; JSON bodies that are not UTF-8 JSON get 400
    ``INVALID_REQUEST_BODY``. The checked body is then replayed downstream.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_package_bytes: int = 0) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # Teams app packages (application/zip) have their own, larger cap.
        self.max_package_bytes = max_package_bytes or max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        is_zip = (
            headers.get("content-type", b"").split(b";")[0].strip().lower() == b"application/zip"
        )
        limit = self.max_package_bytes if is_zip else self.max_body_bytes
        declared = headers.get("content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await send_problem(send, scope, self._too_large(is_zip))
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await send_problem(send, scope, self._too_large(is_zip))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        content_type = headers.get("content-type", b"").decode("latin-1").lower()
        media_type = content_type.split(";", 1)[0].strip()
        limit = limits_for(scope["path"]).max_parameters
        is_form = media_type == FORM_MEDIA_TYPE
        if is_form and scope["path"] == CALLBACK_PATH and parameter_count(body) > limit:
            # A form_post return too must end in an outcome: only its state goes
            # on, and the GET step records a return without code or error.
            body = state_only(body)
        if media_type == FORM_MEDIA_TYPE and parameter_count(body) > limit:
            # Form fields cost what query parameters cost: count them before parsing.
            too_many = errors.TooManyParameters(f"the form carries more than {limit} fields")
            await send_problem(send, scope, too_many)
            return
        if body and _is_json(content_type):
            problem = _json_problem(body)
            if problem is not None:
                await send_problem(send, scope, problem)
                return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self, is_zip: bool) -> errors.BrokerError:
        if is_zip:
            return errors.TeamsAppPackageTooLarge(
                f"the package exceeds {self.max_package_bytes} bytes"
            )
        return errors.PayloadTooLarge(f"the request body exceeds {self.max_body_bytes} bytes")


class SecurityHeadersMiddleware:
    """Headers for every answer: no sniffing, no framing, no referrer, no caching of secrets.

    Outermost of our middleware, so answers from every layer get them; HSTS
    is sent in production, where the broker is only reached over https.
    """

    def __init__(self, app: ASGIApp, hsts: bool) -> None:
        self.app = app
        base = [(k.lower().encode(), v.encode()) for k, v in pages.BASE_HEADERS.items()]
        if hsts:
            base.append((b"strict-transport-security", pages.HSTS.encode()))
        self.headers = base

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_docs = scope["path"].startswith(("/ui", "/openapi.json", "/openapi.yaml"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [
                    (k, v)
                    for k, v in self.headers
                    if k not in present and not (is_docs and k == b"cache-control")
                ]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RequestLogMiddleware:
    """The request id and the access line: one JSON line per request, errors included.

    Outermost of our middleware, so refusals by the guards are logged too. The
    line names the operation, never the path or query: a link path carries its
    handle and the callback query the state and the code.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"x-request-id"),
            None,
        )
        request_id = observability.accept_request_id(offered)
        # Connexion's router writes the operation into a shallow copy of the scope:
        # an ``extensions`` dict made here is shared with it (uvicorn sends none).
        extensions: dict[str, Any] = scope.setdefault("extensions", {})
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                message["headers"] = [*headers, (b"x-request-id", request_id.encode())]
            await send(message)

        with observability.serving(request_id) as record:
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                routing = extensions.get("connexion_routing", {})
                operation_id = spec_operation_id(routing.get("operation_id"))
                duration = time.perf_counter() - started
                observability.log_access(
                    observability.access_line(
                        record,
                        method=scope["method"],
                        operation_id=operation_id,
                        status=status,
                        duration_seconds=duration,
                    )
                )
                metrics.observe_request(operation_id, status, duration)


def spec_operation_id(resolved: str | None) -> str | None:
    """``handlers.results.redeem_result`` -> ``redeemResult``, the spec's operationId."""
    if not resolved:
        return None
    first, *rest = resolved.rsplit(".", 1)[-1].split("_")
    return first + "".join(word.capitalize() for word in rest)


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip()
    return media_type == "application/json" or media_type.endswith("+json")


def _json_problem(body: bytes) -> errors.BrokerError | None:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return errors.InvalidRequestBody("the request body is not valid UTF-8")
    try:
        json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        return errors.InvalidRequestBody(f"the request body is not valid JSON: {exc}")
    except RecursionError:
        return errors.InvalidRequestBody("the request body is nested too deeply")
    return None


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are Python extensions, not JSON.
    raise ValueError(f"{name} is not valid JSON")


async def send_problem(send: Send, scope: Scope, error: errors.BrokerError) -> None:
    """Answer ``error`` from middleware, through the one renderer, in the admin's language."""
    languages = [v for k, v in scope.get("headers", []) if k.lower() == b"accept-language"]
    accept_language = languages[0].decode("latin-1") if languages else None
    status, headers, body = respond(scope["path"], error, accept_language=accept_language)
    raw: list[Any] = [
        (b"content-length", str(len(body)).encode()),
        *[(k.lower().encode(), v.encode()) for k, v in headers.items()],
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
