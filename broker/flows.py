"""The admin's round trip: from the click on a link, through Microsoft, back to us.

:func:`launch` turns a live action item link into a short-lived flow (state
JWT, server-side flow record holding MSAL's secrets, browser-binding cookie)
and the Microsoft URL to go to. :func:`complete` checks everything Microsoft
sends back, in DESIGN.md's order, and records the outcome:

1. the state JWT: signature, algorithm, audience, issuer, expiry (no network);
2. the browser-binding cookie of that flow (constant-time);
3. the flow record, consumed atomically (a replay or a race loses);
4. the action item: still open, and its callback still equal to the state's
   and on the provider's allow-list;
5. ``error`` from Microsoft wins over everything else;
6. consents: an app-only token confirms the grant (``tenant`` from the query
   is never trusted); sign-ins: MSAL redeems the code, we validate the ID token.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import insert, select, update

from broker import errors
from broker.action_items import hash_handle
from broker.callbacks import check_callback_url, is_loopback_host
from broker.catalog import ActionSpec
from broker.db import action_items, enterprises, flows
from broker.events import record_audit
from broker.microsoft import microsoft_error
from broker.outcomes import Delivery, FinishedItem, Outcome, delivery_for, record_outcome
from broker.providers import get_provider
from broker.runtime import Runtime
from broker.state import (
    FlowState,
    binding_matches,
    mint_state,
    new_binding_nonce,
    verify_state,
)
from broker.teams_deploy import deploy_teams_apps
from broker.tokens import digest

log = logging.getLogger("ctt_broker.flows")
HANDLE_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")
COOKIE_PREFIX = "ctt_bind_"
STATE_AUDIENCE = "ctt-broker/callback"


@dataclass(frozen=True)
class Launch:
    """Where to send the admin, and the binding cookie to set on the way."""

    location: str
    cookie_name: str
    cookie_value: str = ""
    cookie_max_age: int = 600
    cookie_secure: bool = True
    cookie_path: str = "/oauth/callback"

    def __repr__(self) -> str:
        return f"Launch(location=<Microsoft>, cookie_name={self.cookie_name!r})"


@dataclass(frozen=True)
class Completion:
    """The recorded outcome and how the browser returns to the provider."""

    outcome: Outcome
    delivery: Delivery
    cookie_name: str
    cookie_path: str


def callback_path(runtime: Runtime) -> str:
    """The path of our redirect URI (PUBLIC_BASE_URL may carry a path prefix)."""
    return urlsplit(runtime.settings.redirect_uri).path


def cookie_name(jti: str) -> str:
    """One binding cookie per flow, so two tabs with two flows do not clash."""
    return COOKIE_PREFIX + digest(jti)[:16]


def launch(runtime: Runtime, handle: str) -> Launch:
    """Start a flow for the link ``handle``; raise a ``Link*`` error for a dead link."""
    if not HANDLE_SHAPE.match(handle):
        raise errors.LinkNotFound("this link is not valid")
    now = runtime.now()

    with runtime.engine.connect() as connection:
        row = (
            connection.execute(
                select(action_items).where(action_items.c.handle_hash == hash_handle(handle))
            )
            .mappings()
            .first()
        )
        if row is None:
            raise errors.LinkNotFound("this link is not valid")
        tenant_id = connection.execute(
            select(enterprises.c.tenant_id).where(enterprises.c.id == row["enterprise_id"])
        ).scalar_one()
    _check_live(row["status"], row["expires_at"] <= now)
    spec = runtime.catalog.get(row["action_type"])
    settings = runtime.settings
    nonce = new_binding_nonce(runtime.random_bytes)
    state, flow_state = mint_state(
        runtime.keys.state_keyring,
        issuer=settings.public_base_url,
        audience=STATE_AUDIENCE,
        action_item_id=row["id"],
        action_type=row["action_type"],
        callback_url=row["callback_url"],
        binding_nonce=nonce,
        now=now,
        random_bytes=runtime.random_bytes,
        lifetime_seconds=settings.flow_ttl_seconds,
    )
    msal_flow: dict[str, Any] | None = None
    if spec.kind == "consent":
        if tenant_id is None:  # getActionItemUrl refuses this; a re-registration race is possible
            raise errors.EnterpriseNotRegistered("the enterprise is not registered")
        location = runtime.ms.build_consent_url(spec, tenant_id, state)
    else:
        location, msal_flow = runtime.ms.start_sign_in(
            spec, _sign_in_tenant(spec, tenant_id), state
        )
    with runtime.engine.begin() as connection:
        connection.execute(
            insert(flows).values(
                jti=flow_state.jti,
                action_item_id=row["id"],
                msal_flow=json.dumps(msal_flow) if msal_flow is not None else None,
                created_at=now,
                expires_at=flow_state.expires_at,
            )
        )
        connection.execute(
            update(action_items)
            .where(action_items.c.id == row["id"], action_items.c.status == "created")
            .values(status="opened", opened_at=now, updated_at=now)
        )
        record_audit(
            connection,
            runtime,
            row["provider_id"],
            "admin",
            "actionItem.opened",
            enterprise_id=row["enterprise_id"],
            action_item_id=row["id"],
        )
    return Launch(
        location=location,
        cookie_name=cookie_name(flow_state.jti),
        cookie_value=nonce,
        cookie_max_age=settings.flow_ttl_seconds,
        cookie_secure=not _is_loopback_http(settings.public_base_url),
        cookie_path=callback_path(runtime),
    )


def complete(runtime: Runtime, params: Mapping[str, str], cookies: Mapping[str, str]) -> Completion:
    """Check Microsoft's answer and record the outcome; see the module docstring."""
    settings = runtime.settings
    token = params.get("state")
    if not token:
        raise errors.StateInvalid("the response carries no state")
    flow_state = verify_state(
        token,
        runtime.keys.state_keyring,
        issuer=settings.public_base_url,
        audience=STATE_AUDIENCE,
        now=runtime.now(),
    )
    name = cookie_name(flow_state.jti)
    if not binding_matches(flow_state, cookies.get(name)):
        # A refresh of the finished callback page lost its cookie with completion:
        # say "already done" rather than "another browser". Nothing is consumed here.
        if _flow_consumed(runtime, flow_state):
            raise errors.StateReplayed("this sign-in was already completed")
        raise errors.BrowserBindingMismatch("this sign-in was started in another browser")
    msal_flow = _consume_flow(runtime, flow_state)
    item = _finished_item(runtime, flow_state)
    spec = runtime.catalog.get(item.action_type)
    try:
        outcome = _outcome(runtime, spec, item, params, msal_flow)
    except (errors.StateInvalid, errors.LinkExpired, errors.LinkUsed):
        raise
    except Exception as exc:  # the flow is spent: an outcome must still be recorded
        log.exception("unexpected failure completing %s", item.action_item_id)
        outcome = Outcome(status="failed", error=errors.InternalError(type(exc).__name__))
    stored, code = record_outcome(runtime, item, outcome)
    return Completion(
        outcome=stored,
        delivery=delivery_for(runtime, item, stored, code),
        cookie_name=name,
        cookie_path=callback_path(runtime),
    )


def _outcome(
    runtime: Runtime,
    spec: ActionSpec,
    item: FinishedItem,
    params: Mapping[str, str],
    msal_flow: dict[str, Any] | None,
) -> Outcome:
    with runtime.engine.connect() as connection:
        tenant_id = connection.execute(
            select(enterprises.c.tenant_id).where(enterprises.c.id == item.enterprise_id)
        ).scalar_one()
    consent = spec.consent_type
    try:
        if params.get("error"):
            # Entra's admin consent error redirect also says admin_consent=True: error wins.
            raise microsoft_error(params.get("error"), params.get("error_description"))
        if spec.kind == "consent":
            return _confirm_consent(runtime, spec, tenant_id)
        if msal_flow is None:
            raise errors.StateInvalid("the flow record holds no sign-in")
        return _sign_in(runtime, spec, item, tenant_id, params, msal_flow)
    except errors.BrokerError as failure:
        if isinstance(failure, errors.StateInvalid | errors.LinkExpired | errors.LinkUsed):
            raise
        return Outcome(
            status="failed",
            error=failure,
            tenant_id=tenant_id,
            consent_type=consent,
            consent_status="failed" if consent else None,
            payload=_consent_payload(spec, "failed", ()) if consent else {},
        )


def _confirm_consent(runtime: Runtime, spec: ActionSpec, tenant_id: str | None) -> Outcome:
    if tenant_id is None:
        raise errors.EnterpriseNotRegistered("the enterprise is not registered")
    check = runtime.ms.confirm_consent(spec, tenant_id)
    if not check.visible:
        return Outcome(
            status="pending",
            tenant_id=tenant_id,
            consent_type=spec.consent_type,
            consent_status="pending",
            payload=_consent_payload(spec, "pending", ()),
        )
    missing = sorted(set(spec.scopes) - set(check.roles))
    if check.tenant_id != tenant_id or missing:
        raise errors.ConsentNotConfirmed(
            "the app-only token is for another tenant"
            if check.tenant_id != tenant_id
            else f"the grant lacks {', '.join(missing)}"
        )
    return Outcome(
        status="completed",
        tenant_id=tenant_id,
        consent_type=spec.consent_type,
        consent_status="granted",
        payload=_consent_payload(spec, "granted", check.roles),
    )


def _sign_in(
    runtime: Runtime,
    spec: ActionSpec,
    item: FinishedItem,
    tenant_id: str | None,
    params: Mapping[str, str],
    msal_flow: dict[str, Any],
) -> Outcome:
    signed_in = runtime.ms.complete_sign_in(
        spec, _sign_in_tenant(spec, tenant_id), msal_flow, params
    )
    claims = signed_in.claims
    if spec.needs_registered_enterprise and claims.tenant_id != tenant_id:
        raise errors.LoginWrongTenant("the account belongs to another Microsoft tenant")
    if not spec.needs_registered_enterprise and tenant_id is not None and not item.reregister:
        # Two registration links issued before the first completed: only one binds.
        raise errors.EnterpriseAlreadyRegistered("the enterprise is already registered")
    if spec.deploys_teams_apps:  # a Teams Administrator suffices; the token is used, not kept
        return deploy_teams_apps(runtime, item, claims, signed_in.result)
    if not claims.is_global_admin:
        raise errors.NotGlobalAdmin("the account is not a Global Administrator")
    provider = get_provider(runtime, item.provider_id)
    return Outcome(
        status="completed",
        tenant_id=claims.tenant_id,
        register_tenant=not spec.needs_registered_enterprise,
        payload={
            "authenticationResult": authentication_result(
                runtime, signed_in.result, claims.raw, provider.share_refresh_token
            )
        },
    )


def authentication_result(
    runtime: Runtime, result: Mapping[str, Any], claims: Mapping[str, Any], share_refresh: bool
) -> dict[str, Any]:
    """MSAL's result reshaped like MSAL's AuthenticationResult (camelCase)."""
    oid = str(claims.get("oid", ""))
    tid = str(claims.get("tid", ""))
    expires_in = int(result.get("expires_in", 0) or 0)
    scope = result.get("scope", "")
    shaped: dict[str, Any] = {
        "accessToken": result.get("access_token"),
        "tokenType": result.get("token_type", "Bearer"),
        "expiresOn": (runtime.now() + timedelta(seconds=expires_in)).isoformat(),
        "scopes": scope.split() if isinstance(scope, str) else list(scope or []),
        "idToken": result.get("id_token"),
        "idTokenClaims": dict(claims),
        "tenantId": tid,
        "uniqueId": oid,
        "authority": f"{runtime.settings.login_host}/{tid}",
        "account": {
            "homeAccountId": f"{oid}.{tid}",
            "environment": runtime.settings.login_host.split("://", 1)[-1],
            "tenantId": tid,
            "username": claims.get("preferred_username"),
            "localAccountId": oid,
            "name": claims.get("name"),
        },
    }
    if share_refresh and result.get("refresh_token"):
        shaped["refreshToken"] = result["refresh_token"]
    return shaped


def _consent_payload(spec: ActionSpec, status: str, roles: tuple[str, ...]) -> dict[str, Any]:
    return {
        "consent": {
            "consentType": spec.consent_type,
            "status": status,
            "roles": sorted(roles),
            "requiredRoles": list(spec.scopes),
        }
    }


def _flow_consumed(runtime: Runtime, flow_state: FlowState) -> bool:
    with runtime.engine.connect() as connection:
        consumed_at = connection.execute(
            select(flows.c.consumed_at).where(flows.c.jti == flow_state.jti)
        ).scalar_one_or_none()
    return consumed_at is not None


def _consume_flow(runtime: Runtime, flow_state: FlowState) -> dict[str, Any] | None:
    """Use the flow record once; the conditional update settles races between instances."""
    now = runtime.now()
    with runtime.engine.begin() as connection:
        consumed = connection.execute(
            update(flows)
            .where(flows.c.jti == flow_state.jti, flows.c.consumed_at.is_(None))
            .values(consumed_at=now)
        )
        if consumed.rowcount != 1:
            raise errors.StateReplayed("this sign-in was already completed")
        stored = connection.execute(
            select(flows.c.msal_flow, flows.c.action_item_id).where(flows.c.jti == flow_state.jti)
        ).one()
        # Flow secrets are needed exactly once: wipe them now.
        connection.execute(
            update(flows).where(flows.c.jti == flow_state.jti).values(msal_flow=None)
        )
    if stored.action_item_id != flow_state.action_item_id:
        raise errors.StateInvalid("the state does not match its flow")
    return json.loads(stored.msal_flow) if stored.msal_flow else None


def _finished_item(runtime: Runtime, flow_state: FlowState) -> FinishedItem:
    with runtime.engine.connect() as connection:
        row = (
            connection.execute(
                select(action_items).where(action_items.c.id == flow_state.action_item_id)
            )
            .mappings()
            .one()
        )
    # The flow's own lifetime governs from here: a link that expires while the
    # admin is at Microsoft still completes; a revoked or used one does not.
    _check_live(row["status"], expired=False)
    provider = get_provider(runtime, row["provider_id"])
    if flow_state.callback_url != row["callback_url"]:
        raise errors.StateInvalid("the state's callback differs from the action item's")
    try:
        check_callback_url(
            row["callback_url"], provider.callback_urls, development=provider.development
        )
    except errors.CallbackUrlRejected:
        raise errors.CallbackNoLongerAllowed(
            "the provider no longer allows this return address"
        ) from None
    return FinishedItem(
        action_item_id=row["id"],
        provider_id=row["provider_id"],
        enterprise_id=row["enterprise_id"],
        action_type=row["action_type"],
        callback_url=row["callback_url"],
        provider_state=row["provider_state"],
        result_delivery=row["result_delivery"],
        reregister=row["reregister"],
    )


def _check_live(status: str, expired: bool) -> None:
    if status == "revoked":
        raise errors.LinkRevoked("the provider withdrew this link")
    if status in ("completed", "failed", "pending"):
        raise errors.LinkUsed("this link was already used")
    if expired:
        raise errors.LinkExpired("this link has expired")


def _sign_in_tenant(spec: ActionSpec, tenant_id: str | None) -> str:
    # Always the multi-tenant endpoint: registration discovers the tenant, and a
    # login's tenant is compared with the enterprise's by us (LOGIN_WRONG_TENANT),
    # which also refuses guests signing in through another directory.
    del spec, tenant_id
    return "organizations"


def _is_loopback_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "http" and is_loopback_host((parts.hostname or "").lower())
