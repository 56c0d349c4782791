"""The demo portal's routes: a telecom's customer portal that uses ctt-broker as a provider would.

The browser starts an action here, is sent to the broker's one-time link and comes back to
``/callback``, where the portal checks the ``state`` it issued, redeems the one-time
``resultCode`` (or verifies the ``form_post`` result JWT) and shows the verified outcome.
Webhooks arrive at ``/webhooks`` and are verified with the provider's secret.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from html import escape
from typing import Any
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from broker.webhook_signatures import WebhookVerificationError, verify_webhook
from sandbox.portal.client import BrokerError, Portal, PortalConfig, ResultRejected
from sandbox.portal.views import (
    SECURITY_HEADERS,
    STYLE,
    action_title,
    actions_section,
    back,
    binding_check,
    broker_error,
    enterprise_section,
    error_section,
    outcome_section,
    page,
    state_check,
    teams_section,
    version_tuple,
    webhooks_section,
)

log = logging.getLogger("sandbox.portal")

MAX_FORM_BYTES = 64 * 1024


def create_portal_app(config: PortalConfig, client: httpx.AsyncClient | None = None) -> Starlette:
    """The portal's ASGI app; ``client`` defaults to one on ``config.broker_url``."""
    portal = Portal(config, client)

    async def home(request: Request) -> Response:
        try:
            enterprise = await portal.demo_enterprise()
            types = await portal.action_types()
            packages = await portal.teams_packages()
        except BrokerError as exc:
            return page("Unavailable", broker_error(exc), 502)
        registered = (enterprise.get("registration") or {}).get("status") == "registered"
        body = (
            f"<h1>Welcome, {escape(str(enterprise.get('name')))}</h1>"
            + enterprise_section(enterprise)
            + actions_section(types, registered)
            + teams_section(packages, enterprise, registered)
        )
        return page("Your enterprise", body + webhooks_section(portal.webhooks))

    async def webhook(request: Request) -> Response:
        body = await request.body()
        secret = config.webhook_secret
        try:
            if not secret or len(body) > MAX_FORM_BYTES:
                raise WebhookVerificationError("no secret configured or body too large")
            event = verify_webhook(secret, body, dict(request.headers))
        except WebhookVerificationError as exc:
            portal.webhooks.appendleft({"verified": False, "problem": str(exc)})
            return Response("signature rejected", status_code=400, media_type="text/plain")
        seen = {w.get("eventId") for w in portal.webhooks}
        if event.get("eventId") not in seen:  # retries carry the same webhook-id: keep one
            portal.webhooks.appendleft({"verified": True, **event})
        return Response(status_code=204)

    async def start(request: Request) -> Response:
        form = await _form(request)
        choice = form.get("choice", "")
        action_type, _, flag = choice.partition("+")
        delivery = "form_post" if form.get("resultDelivery") == "form_post" else "redirect"
        state = portal.issue_state(action_type, delivery)
        try:
            enterprise = await portal.demo_enterprise()
            body: dict[str, Any] = {
                "actionType": action_type,
                "enterpriseId": enterprise["enterpriseId"],
                "callbackUrl": config.callback_url,
                "state": state,
                "resultDelivery": delivery,
                "expiresInSeconds": 600,
            }
            if flag == "reregister":
                body["reregister"] = True
            created = await portal.call("POST", "/enterprise/getActionItemUrl", json=body)
        except BrokerError as exc:
            portal.states.pop(state, None)
            status_code = exc.status if 400 <= exc.status < 500 else 502
            return page("Could not start", broker_error(exc) + back(), status_code)
        log.info("sent a browser to %s (%s)", action_type, created.get("actionItemId"))
        # 303: the browser GETs the broker link; the link itself is never logged.
        return RedirectResponse(str(created["url"]), status_code=303, headers=SECURITY_HEADERS)

    async def callback_get(request: Request) -> Response:
        params = request.query_params
        issued = portal.take_state(params.get("state"))
        sections = state_check(issued, params.get("actionType"))
        result_code = params.get("resultCode")
        if not result_code:
            sections += error_section(
                "No result code", "The broker did not send a <code>resultCode</code>."
            )
            return await _result_page(portal, sections, None)
        try:
            result = await portal.call("POST", "/results/redeem", json={"resultCode": result_code})
        except BrokerError as exc:
            return await _result_page(portal, sections + broker_error(exc), None)
        if params.get("status") and params.get("status") != result.get("status"):
            sections += error_section(
                "Status mismatch", "The redirect's status differs from the redeemed result."
            )
        sections += binding_check(result, params.get("state"), config.callback_url)
        sections += outcome_section(result, "resultCode redeemed by the portal's backend")
        return await _result_page(portal, sections, result)

    async def callback_post(request: Request) -> Response:
        form = await _form(request)
        issued = portal.take_state(form.get("state"))
        token = form.get("result", "")
        try:
            result = await portal.verify_result_jwt(token)
        except ResultRejected as exc:
            sections = state_check(issued, None) + error_section(
                "Result rejected", escape(str(exc))
            )
            return await _result_page(portal, sections, None, 400)
        sections = state_check(issued, str(result.get("actionType")))
        sections += binding_check(result, form.get("state"), config.callback_url)
        sections += outcome_section(result, "form_post result JWT (ES256, broker JWKS)")
        return await _result_page(portal, sections, result)

    async def walkthrough(request: Request) -> Response:
        """The README walkthrough's callback: it prints what arrived and redeems nothing."""
        arrived = dict(request.query_params)
        if request.method == "POST":
            arrived.update(await _form(request))
        print("walkthrough callback received " + json.dumps(arrived), flush=True)
        lines = [f"{name}={value}" for name, value in arrived.items()]
        text = (
            "Your callback received:\n\n  "
            + "\n  ".join(lines or ["(nothing)"])
            + "\n\nNothing was redeemed: redeem the resultCode yourself (README, step 4).\n"
        )
        return Response(text, media_type="text/plain", headers=SECURITY_HEADERS)

    async def bump(request: Request) -> Response:
        form = await _form(request)
        version = form.get("version", "")
        if version_tuple(version) == (0, 0, 0):
            return page("Could not upload", error_section("Bad version", "") + back(), 400)
        try:
            await portal.upload_demo_version(version)
        except BrokerError as exc:
            return page("Could not upload", broker_error(exc) + back(), 400)
        return RedirectResponse("/", status_code=303, headers=SECURITY_HEADERS)

    async def stylesheet(request: Request) -> Response:
        return Response(
            STYLE,
            media_type="text/css",
            headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await portal.client.aclose()

    app = Starlette(
        routes=[
            Route("/", home, methods=["GET"]),
            Route("/start", start, methods=["POST"]),
            Route("/teams/bump", bump, methods=["POST"]),
            Route("/callback", callback_get, methods=["GET"]),
            Route("/callback", callback_post, methods=["POST"]),
            Route("/webhooks", webhook, methods=["POST"]),
            Route("/walkthrough", walkthrough, methods=["GET", "POST"]),
            Route("/static/portal.css", stylesheet, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.portal = portal
    return app


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form (first value per name), capped; no multipart dependency needed."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    fields: dict[str, str] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(name, value)
    return fields


async def _result_page(
    portal: Portal, sections: str, result: dict[str, Any] | None, status_code: int = 200
) -> Response:
    try:
        enterprise = await portal.demo_enterprise()
        sections += enterprise_section(enterprise)
    except BrokerError as exc:
        sections += broker_error(exc)
    title = "Result"
    if result is not None:
        title = f"{action_title(result.get('actionType'))}: {result.get('status')}"
    return page(title, f"<h1>{escape(title)}</h1>{sections}{back()}", status_code)
