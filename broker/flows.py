"""The admin's round trip: from the click on a link, through Microsoft, back to us.

Orchestration only: storage belongs to :mod:`broker.lifecycle` (the action
item), :mod:`broker.flow_store` (the flow record) and :mod:`broker.outcomes`
(result codes). :func:`launch` turns a live action item link into a
short-lived flow (state JWT, server-side flow record holding MSAL's secrets,
browser-binding cookie) and the Microsoft URL to go to. :func:`complete`
checks everything Microsoft sends back, in DESIGN.md's order:

1. the state JWT: signature, algorithm, audience, issuer, expiry (no network);
2. the browser-binding cookie of that flow (constant-time);
3. the flow record (not yet spent) and the action item: still open, and its
   callback still equal to the state's and on the provider's allow-list;
4. a claim on the flow: a short lease, so a racing callback loses;
5. Microsoft's fields: malformed ones, then ``error``, win over everything else;
6. consents: an app-only token confirms the grant (``tenant`` from the query
   is never trusted); sign-ins: MSAL redeems the code, we validate the ID token;
7. one transaction consumes the flow and records the outcome, while the claim
   holds. If anything fails before it commits, the flow is claimable again
   once the lease runs out: the admin's refresh finishes it, or the worker
   ends the item ``failed`` (:func:`broker.lifecycle.fail_abandoned_flows`).

From step 4 on, every failure becomes the outcome: a flow that reached
Microsoft always ends with one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from broker import errors, flow_store, metrics
from broker.callbacks import check_callback_url, is_loopback_host
from broker.catalog import ActionSpec
from broker.lifecycle import (
    FinishedItem,
    ItemState,
    Outcome,
    consent_payload,
    find_linked_item,
    load_item_state,
    record_launch,
)
from broker.microsoft import CallLog, microsoft_error
from broker.microsoft_return import MicrosoftReturn, missing_fields, read_return
from broker.observability import annotate
from broker.outcomes import Delivery, delivery_for, record_outcome
from broker.providers import Provider, get_provider
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
# Production cookies are __Host- prefixed: the browser then insists on Secure,
# Path=/ and no Domain, so a sibling subdomain cannot plant or shadow one.
HOST_COOKIE_PREFIX = "__Host-"
STATE_AUDIENCE = "ctt-broker/callback"
# Every sign-in uses the multi-tenant endpoint: registration discovers the tenant,
# and a login's tenant is compared with the enterprise's by us (LOGIN_WRONG_TENANT),
# which also refuses guests signing in through another directory.
SIGN_IN_AUTHORITY = "organizations"


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
    cookie_secure: bool = True


def callback_path(runtime: Runtime) -> str:
    """The path of our redirect URI (PUBLIC_BASE_URL may carry a path prefix)."""
    return urlsplit(runtime.settings.redirect_uri).path


def cookie_name(runtime: Runtime, jti: str) -> str:
    """One binding cookie per flow, so two tabs with two flows do not clash."""
    prefix = HOST_COOKIE_PREFIX if _host_cookie(runtime) else ""
    return prefix + COOKIE_PREFIX + digest(jti)[:16]


def cookie_path(runtime: Runtime) -> str:
    """Where the binding cookie is sent: ``/`` for a __Host- cookie, else the callback."""
    return "/" if _host_cookie(runtime) else callback_path(runtime)


def _host_cookie(runtime: Runtime) -> bool:
    return runtime.settings.mode == "production"


def launch(runtime: Runtime, handle: str) -> Launch:
    """Start a flow for the link ``handle``; raise a ``Link*`` error for a dead link."""
    if not HANDLE_SHAPE.match(handle):
        raise errors.LinkNotFound("this link is not valid")
    now = runtime.now()
    current = find_linked_item(runtime, digest(handle))
    if current is None:
        raise errors.LinkNotFound("this link is not valid")
    try:
        _check_live(current.status, current.expires_at <= now)
    except errors.BrokerError as exc:
        raise exc.concerning(current.item.provider_id) from None
    item, tenant_id = current.item, current.tenant_id
    annotate(
        providerId=item.provider_id,
        actionItemId=item.action_item_id,
        actionType=item.action_type,
    )
    spec = runtime.catalog.get(item.action_type)
    settings = runtime.settings
    nonce = new_binding_nonce(runtime.random_bytes)
    state, flow_state = mint_state(
        runtime.credentials.state_keyring,
        issuer=settings.public_base_url,
        audience=STATE_AUDIENCE,
        action_item_id=item.action_item_id,
        action_type=item.action_type,
        callback_url=item.callback_url,
        binding_nonce=nonce,
        now=now,
        random_bytes=runtime.random_bytes,
        lifetime_seconds=settings.flow_ttl_seconds,
    )
    msal_flow: dict[str, Any] | None = None
    if spec.kind == "consent":
        if tenant_id is None:  # getActionItemUrl refuses this; a re-registration race is possible
            raise errors.EnterpriseNotRegistered("the enterprise is not registered")
        location = runtime.microsoft.build_consent_url(spec, tenant_id, state)
    else:
        location, msal_flow = runtime.microsoft.start_sign_in(spec, SIGN_IN_AUTHORITY, state)
    record_launch(
        runtime, current, jti=flow_state.jti, msal_flow=msal_flow, expires_at=flow_state.expires_at
    )
    metrics.flow_started(item.action_type)
    return Launch(
        location=location,
        cookie_name=cookie_name(runtime, flow_state.jti),
        cookie_value=nonce,
        cookie_max_age=settings.flow_ttl_seconds,
        cookie_secure=not _is_loopback_http(settings.public_base_url),
        cookie_path=cookie_path(runtime),
    )


def complete(
    runtime: Runtime,
    pairs: Iterable[tuple[str, str]],
    cookies: Mapping[str, str],
    *,
    overflow: str | None = None,
) -> Completion:
    """Check Microsoft's answer and record the outcome; see the module docstring.

    ``pairs`` is the query as sent, repeated names included. ``overflow`` says why
    the edge cut the return down to its state (too long, too many fields): once
    the state checks out, that is recorded as a malformed return.
    """
    settings = runtime.settings
    response = read_return(pairs, overflow=overflow)
    flow_state = verify_state(
        response.state,
        runtime.credentials.state_keyring,
        issuer=settings.public_base_url,
        audience=STATE_AUDIENCE,
        now=runtime.now(),
    )
    name = cookie_name(runtime, flow_state.jti)
    record = flow_store.read_flow(runtime, flow_state.jti)
    annotate(
        actionItemId=flow_state.action_item_id,
        actionType=flow_state.action_type,
        launchRequestId=record.launch_request_id if record is not None else None,
    )
    if not binding_matches(flow_state, cookies.get(name)):
        # A refresh of the finished callback page lost its cookie with completion:
        # say "already done" rather than "another browser".
        if record is not None and record.consumed:
            raise errors.StateReplayed("this sign-in was already completed")
        raise errors.BrowserBindingMismatch("this sign-in was started in another browser")
    if record is None or record.consumed:
        raise errors.StateReplayed("this sign-in was already completed")
    if record.action_item_id != flow_state.action_item_id:
        raise errors.StateInvalid("the state does not match its flow")
    current = load_item_state(runtime, flow_state.action_item_id)
    try:
        item, provider = _finishable(runtime, flow_state, current)
    except errors.BrokerError as exc:
        raise exc.concerning(current.item.provider_id) from None
    annotate(providerId=item.provider_id)
    claim = flow_store.claim_flow(runtime, flow_state.jti)
    outcome = _outcome(runtime, item, current.tenant_id, provider, response, claim, flow_state)
    recorded = record_outcome(runtime, claim, item, outcome)
    annotate(errorCode=recorded.outcome.error_code)
    metrics.flow_finished(item.action_type, recorded.outcome.status, recorded.outcome.error_code)
    return Completion(
        outcome=recorded.outcome,
        delivery=delivery_for(runtime, item, recorded),
        cookie_name=name,
        cookie_path=cookie_path(runtime),
        cookie_secure=not _is_loopback_http(settings.public_base_url),
    )


def _outcome(
    runtime: Runtime,
    item: FinishedItem,
    tenant_id: str | None,
    provider: Provider,
    response: MicrosoftReturn,
    claim: flow_store.Claim,
    flow_state: FlowState,
) -> Outcome:
    """What Microsoft's answer amounts to. Never raises: the flow is claimed."""
    spec = runtime.catalog.get(item.action_type)
    consent = spec.consent_type
    log = CallLog()
    params = response.params
    try:
        problem = response.problem or missing_fields(params, sign_in=spec.kind != "consent")
        if problem:
            raise errors.MicrosoftResponseInvalid(problem)
        if params.get("error"):
            # Entra's admin consent error redirect also says admin_consent=True: error wins.
            raise microsoft_error(params.get("error"), params.get("error_description"))
        if spec.kind == "consent":
            outcome = _confirm_consent(runtime, spec, tenant_id, log)
        elif claim.msal_flow is None:
            raise errors.StateInvalid("the flow record holds no sign-in")
        else:
            outcome = _sign_in(
                runtime,
                spec,
                item,
                tenant_id,
                provider,
                params,
                claim.msal_flow,
                deadline=flow_state.expires_at,
                log=log,
            )
    except Exception as exc:
        failure = exc if isinstance(exc, errors.BrokerError) else None
        if failure is None:  # the flow is claimed: even a bug must end in an outcome
            log_failure(item, exc)
            failure = errors.InternalError(type(exc).__name__)
        outcome = Outcome(
            status="failed",
            error=failure,
            tenant_id=tenant_id,
            consent_type=consent,
            consent_status="failed" if consent else None,
            payload=consent_payload(consent, spec.scopes, "failed") if consent else {},
        )
    return replace(outcome, microsoft_attempts=log.attempts)


def log_failure(item: FinishedItem, exc: Exception) -> None:
    """An unexpected failure while completing ``item``, with its traceback."""
    log.error("unexpected failure completing %s", item.action_item_id, exc_info=exc)


def _confirm_consent(
    runtime: Runtime, spec: ActionSpec, tenant_id: str | None, log: CallLog
) -> Outcome:
    if tenant_id is None:
        raise errors.EnterpriseNotRegistered("the enterprise is not registered")
    check = runtime.microsoft.confirm_consent(spec, tenant_id, log=log)
    if not check.visible:
        return Outcome(
            status="pending",
            tenant_id=tenant_id,
            consent_type=spec.consent_type,
            consent_status="pending",
            payload=consent_payload(spec.consent_type, spec.scopes, "pending"),
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
        payload=consent_payload(spec.consent_type, spec.scopes, "granted", check.roles),
    )


def _sign_in(
    runtime: Runtime,
    spec: ActionSpec,
    item: FinishedItem,
    tenant_id: str | None,
    provider: Provider,
    params: Mapping[str, str],
    msal_flow: dict[str, Any],
    *,
    deadline: datetime,
    log: CallLog,
) -> Outcome:
    """A sign-in's completion: redeem the code, then check who signed in.

    Sign-in actions that do work in the tenant with the admin's token add
    their step here, after the checks and before the outcome is built.
    """
    signed_in = runtime.microsoft.complete_sign_in(
        spec, SIGN_IN_AUTHORITY, msal_flow, params, deadline=deadline, log=log
    )
    claims = signed_in.claims
    if spec.needs_registered_enterprise and claims.tenant_id != tenant_id:
        raise errors.LoginWrongTenant(
            "the account belongs to another Microsoft tenant", signed_in_tenant=claims.tenant_id
        )
    if not spec.needs_registered_enterprise and tenant_id is not None and not item.reregister:
        # Two registration links issued before the first completed: only one binds.
        raise errors.EnterpriseAlreadyRegistered("the enterprise is already registered")
    if spec.deploys_teams_apps:  # a Teams Administrator suffices; the token is used, not kept
        return deploy_teams_apps(runtime, item, claims, signed_in.result)
    if not claims.is_global_admin:
        raise errors.NotGlobalAdmin("the account is not a Global Administrator")
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


def _finishable(
    runtime: Runtime, flow_state: FlowState, current: ItemState
) -> tuple[FinishedItem, Provider]:
    """The item a returning flow may finish; raise when it is no longer open to it."""
    # The flow's own lifetime governs from here: a link that expires while the
    # admin is at Microsoft still completes; a revoked or used one does not.
    _check_live(current.status, expired=False)
    item = current.item
    if flow_state.callback_url != item.callback_url:
        raise errors.StateInvalid("the state's callback differs from the action item's")
    provider = get_provider(runtime, item.provider_id, with_keys=False)
    try:
        check_callback_url(
            item.callback_url, provider.callback_urls, development=provider.development
        )
    except errors.CallbackUrlRejected:
        raise errors.CallbackNoLongerAllowed(
            "the provider no longer allows this return address"
        ) from None
    return item, provider


def _check_live(status: str, expired: bool) -> None:
    if status == "revoked":
        raise errors.LinkRevoked("the provider withdrew this link")
    if status in ("completed", "failed", "pending"):
        raise errors.LinkUsed("this link was already used")
    if expired:
        raise errors.LinkExpired("this link has expired")


def _is_loopback_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "http" and is_loopback_host((parts.hostname or "").lower())
