"""The Starlette application exposing an `Emulator` over Entra-shaped HTTP endpoints."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from emulator import pages
from emulator.core import Emulator, Respond, ShowConsent, ShowPicker, Step
from emulator.errors import EntraError, error_body
from emulator.graph import GraphError, GraphReply

logger = logging.getLogger("emulator")

_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_TOKEN_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}

Endpoint = Callable[[Request], Awaitable[Response]]


def _with_params(redirect_uri: str, params: tuple[tuple[str, str], ...], fragment: bool) -> str:
    parts = urlsplit(redirect_uri)
    if fragment:
        return urlunsplit(parts._replace(fragment=urlencode(params)))
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def _respond(step: Respond) -> Response:
    if step.response_mode == "form_post":
        return HTMLResponse(
            pages.form_post_page(step.redirect_uri, step.params), headers=_PAGE_HEADERS
        )
    location = _with_params(step.redirect_uri, step.params, step.response_mode == "fragment")
    return RedirectResponse(location, status_code=302, headers=_PAGE_HEADERS)


def _render(step: Step) -> Response:
    if isinstance(step, ShowPicker):
        return HTMLResponse(pages.picker_page(step), headers=_PAGE_HEADERS)
    if isinstance(step, ShowConsent):
        return HTMLResponse(pages.consent_page(step), headers=_PAGE_HEADERS)
    return _respond(step)


def _error_page(err: EntraError) -> Response:
    logger.info("interactive error AADSTS%s", err.aadsts)
    return HTMLResponse(pages.error_page(err), status_code=err.status, headers=_PAGE_HEADERS)


def _json_error(emulator: Emulator, err: EntraError, request: Request) -> JSONResponse:
    correlation = request.headers.get("client-request-id")
    body = error_body(
        err, now=emulator.now(), issuer_base=emulator.config.issuer_base, correlation_id=correlation
    )
    return JSONResponse(body, status_code=err.status, headers=_TOKEN_HEADERS)


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def create_emulator_app(emulator: Emulator) -> Starlette:
    """Build the ASGI app serving `emulator`; control routes only if the config enables them."""

    async def index(request: Request) -> Response:
        return HTMLResponse(pages.index_page(emulator.config), headers=_PAGE_HEADERS)

    async def openid_configuration(request: Request) -> Response:
        try:
            return JSONResponse(emulator.discovery_document(request.path_params["tenant"]))
        except EntraError as err:
            return _json_error(emulator, err, request)

    async def keys(request: Request) -> Response:
        try:
            return JSONResponse(emulator.jwks(request.path_params["tenant"]))
        except EntraError as err:
            return _json_error(emulator, err, request)

    async def instance_discovery(request: Request) -> Response:
        return JSONResponse(emulator.instance_discovery())

    async def authorize(request: Request) -> Response:
        try:
            step = emulator.start_authorize(
                request.path_params["tenant"], dict(request.query_params)
            )
        except EntraError as err:
            return _error_page(err)
        return _render(step)

    async def admin_consent(request: Request) -> Response:
        try:
            step = emulator.start_admin_consent(
                request.path_params["tenant"], dict(request.query_params)
            )
        except EntraError as err:
            return _error_page(err)
        return _render(step)

    async def select(request: Request) -> Response:
        form = await _form(request)
        try:
            step = emulator.select_account(form.get("txn", ""), form.get("username", ""))
        except EntraError as err:
            return _error_page(err)
        return _render(step)

    async def consent(request: Request) -> Response:
        form = await _form(request)
        decision = form.get("decision", "")
        if decision not in ("accept", "cancel"):
            return _error_page(EntraError(900144, "The field 'decision' must be accept or cancel."))
        try:
            step = emulator.decide(form.get("txn", ""), decision == "accept")
        except EntraError as err:
            return _error_page(err)
        return _render(step)

    async def token(request: Request) -> Response:
        fault = emulator.take_token_fault()
        if fault.delay_seconds > 0:
            await anyio.sleep(fault.delay_seconds)
        if fault.fail_status is not None:
            logger.info("token endpoint: injected HTTP %s", fault.fail_status)
            err = EntraError(
                90033,
                "A transient error has occurred. Please try again.",
                error="temporarily_unavailable",
                status=fault.fail_status,
            )
            return _json_error(emulator, err, request)
        form = await _form(request)
        grant_type = form.get("grant_type", "")
        try:
            body = emulator.token(
                request.path_params["tenant"], form, request.headers.get("authorization")
            )
        except EntraError as err:
            # Never log form values: they hold secrets, codes and refresh tokens.
            logger.info("token grant_type=%s -> AADSTS%s", grant_type, err.aadsts)
            return _json_error(emulator, err, request)
        logger.info("token grant_type=%s -> 200", grant_type)
        headers = dict(_TOKEN_HEADERS)
        if "client-request-id" in request.headers:
            headers["client-request-id"] = request.headers["client-request-id"]
        return JSONResponse(body, headers=headers)

    async def graph_answer(request: Request, call: Callable[[bytes], GraphReply]) -> Response:
        body = await request.body() if request.method == "POST" else b""
        delay = emulator.graph.delay_seconds
        if delay > 0:
            await anyio.sleep(delay)
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if request.method == "POST" and media != "application/zip":
            reply = GraphError(
                415, "UnsupportedMediaType", "The app package must be sent as application/zip."
            ).reply(emulator.now())
        else:
            reply = call(body)
        logger.info("graph %s %s -> %s", request.method, request.url.path, reply.status)
        if reply.body is None:
            return Response(status_code=reply.status, headers=dict(reply.headers))
        return JSONResponse(reply.body, status_code=reply.status, headers=dict(reply.headers))

    async def teams_apps(request: Request) -> Response:
        auth = request.headers.get("authorization")
        query = dict(request.query_params)
        if request.method == "GET":
            return await graph_answer(request, lambda _: emulator.graph.list_apps(auth, query))
        return await graph_answer(request, lambda body: emulator.graph.publish(auth, body, query))

    async def app_definitions(request: Request) -> Response:
        auth = request.headers.get("authorization")
        app_id = request.path_params["app_id"]
        return await graph_answer(request, lambda body: emulator.graph.update(auth, app_id, body))

    routes = [
        Route("/", index),
        Route("/v1.0/appCatalogs/teamsApps", teams_apps, methods=["GET", "POST"]),
        Route(
            "/v1.0/appCatalogs/teamsApps/{app_id}/appDefinitions", app_definitions, methods=["POST"]
        ),
        Route("/common/discovery/instance", instance_discovery),
        Route("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration),
        Route("/{tenant}/discovery/v2.0/keys", keys),
        Route("/{tenant}/oauth2/v2.0/authorize", authorize),
        Route("/{tenant}/v2.0/adminconsent", admin_consent),
        Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
        Route(pages.SELECT_PATH, select, methods=["POST"]),
        Route(pages.CONSENT_PATH, consent, methods=["POST"]),
    ]
    if emulator.config.enable_control_routes:
        routes.extend(_control_routes(emulator))
    return Starlette(routes=routes)


def _control_routes(emulator: Emulator) -> list[Route]:
    """`POST /_emulator/...` with a JSON body: fault injection for a separately running process."""

    def control(action: Callable[[Mapping[str, object]], object]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            try:
                payload = json.loads(raw) if raw else {}
                if not isinstance(payload, dict):
                    raise TypeError("body must be a JSON object")
                result = action(payload)
            except (ValueError, TypeError, KeyError, EntraError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse({"ok": True, "result": result})

        return endpoint

    def _num(payload: Mapping[str, object], name: str, default: float | None = None) -> float:
        value = payload.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"'{name}' must be a number")
        return float(value)

    def _str(payload: Mapping[str, object], name: str) -> str:
        value = payload.get(name)
        if not isinstance(value, str):
            raise TypeError(f"'{name}' must be a string")
        return value

    def token_failures(p: Mapping[str, object]) -> object:
        emulator.fail_next_token_requests(int(_num(p, "count")), int(_num(p, "status", 503)))
        return None

    def token_delay(p: Mapping[str, object]) -> object:
        emulator.set_token_delay(_num(p, "seconds"))
        return None

    def propagation(p: Mapping[str, object]) -> object:
        emulator.set_consent_propagation_delay(_num(p, "seconds"))
        return None

    def id_token_overrides(p: Mapping[str, object]) -> object:
        claims = p.get("claims")
        if not isinstance(claims, dict):
            raise TypeError("'claims' must be an object")
        emulator.override_next_id_token_claims(claims, int(_num(p, "count", 1)))
        return None

    def grant(p: Mapping[str, object]) -> object:
        emulator.grant_admin_consent(_str(p, "tenant"), _str(p, "client_id"))
        return None

    def revoke(p: Mapping[str, object]) -> object:
        emulator.revoke_consent(_str(p, "tenant"), _str(p, "client_id"))
        return None

    def graph_failures(p: Mapping[str, object]) -> object:
        retry_after = p.get("retryAfter")
        code = p.get("code")
        emulator.graph.fail_next(
            int(_num(p, "count")),
            int(_num(p, "status")),
            code=code if isinstance(code, str) else None,
            retry_after=int(_num(p, "retryAfter")) if retry_after is not None else None,
        )
        return None

    def graph_delay(p: Mapping[str, object]) -> object:
        emulator.graph.set_delay(_num(p, "seconds"))
        return None

    def reset(p: Mapping[str, object]) -> object:
        emulator.reset()
        return None

    handlers: dict[str, Callable[[Mapping[str, object]], object]] = {
        "token-failures": token_failures,
        "token-delay": token_delay,
        "rotate-keys": lambda p: {"kid": emulator.rotate_signing_key()},
        "unpublished-key": lambda p: {"kid": emulator.use_unpublished_signing_key()},
        "consent-propagation-delay": propagation,
        "id-token-overrides": id_token_overrides,
        "consents/grant": grant,
        "consents/revoke": revoke,
        "graph-failures": graph_failures,
        "graph-delay": graph_delay,
        "reset": reset,
    }
    return [
        Route(f"/_emulator/{name}", control(handler), methods=["POST"])
        for name, handler in handlers.items()
    ]
