"""ASGI middleware that wraps the whole app, errors included.

- :class:`RuntimeMiddleware` puts the app's runtime into every request scope.
- :class:`BodyGuardMiddleware` bounds request bodies and refuses bodies that
  claim to be JSON but are not valid UTF-8 JSON, before Connexion parses them.
- :class:`SecurityHeadersMiddleware` adds headers every answer should carry.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker import errors
from broker.runtime import Runtime
from handlers import pages
from handlers.context import SCOPE_KEY
from handlers.problems import BROWSER_PATHS, MEDIA_TYPE, problem_document, problem_headers


class BrowserPathGuard:
    """Admin-facing paths are exact: anything else there is the link-not-found page.

    Without this, Starlette answers a decoded trailing slash (``/actions/%2e%2e%2f``)
    with a 307 redirect; the admin's browser must never be redirected by a typo.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(BROWSER_PATHS):
            path = scope["path"]
            handle = path[len("/actions/") :] if path.startswith("/actions/") else None
            if (handle is not None and (not handle or "/" in handle)) or (
                handle is None and path != "/oauth/callback"
            ):
                await _send_problem(send, errors.LinkNotFound("this link is not valid"), path)
                return
        await self.app(scope, receive, send)


class RuntimeMiddleware:
    """Expose the app's :class:`Runtime` to handlers through the scope."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope[SCOPE_KEY] = self.runtime
        await self.app(scope, receive, send)


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
            await _send_problem(send, self._too_large(is_zip), scope["path"])
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
                await _send_problem(send, self._too_large(is_zip), scope["path"])
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        content_type = headers.get("content-type", b"").decode("latin-1").lower()
        if body and _is_json(content_type):
            problem = _json_problem(body)
            if problem is not None:
                await _send_problem(send, problem, scope["path"])
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
    """Headers for every answer: no sniffing, no framing, no referrer, no caching of secrets."""

    HEADERS = (
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"content-security-policy", b"frame-ancestors 'none'"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_docs = scope["path"].startswith(("/ui", "/openapi.json"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.HEADERS if k not in present]
                if not is_docs and b"cache-control" not in present:
                    extra.append((b"cache-control", b"no-store"))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


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


async def _send_problem(send: Send, error: errors.BrokerError, path: str) -> None:
    if path.startswith(BROWSER_PATHS):
        body = pages.error_page(error).encode()
        extra = pages.page_headers()
    else:
        body = json.dumps(problem_document(error)).encode()
        extra = {"Content-Type": MEDIA_TYPE, **problem_headers(error)}
    headers: list[Any] = [
        (b"content-length", str(len(body)).encode()),
        *[(k.lower().encode(), v.encode()) for k, v in extra.items()],
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
