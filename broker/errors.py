"""One error hierarchy for the whole broker.

Every error carries its HTTP status, a stable machine-readable ``code`` (each
one is listed in ``openapi.yaml`` under ``ErrorCode``) and a short title. The
handlers package turns them into ``application/problem+json`` for the API and
into an HTML page for the admin's browser; nothing else decides a status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class BrokerError(Exception):
    """Base class: a request-time failure with a status, a code and a title."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL_ERROR"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra: Mapping[str, Any] = extra


# -- 400: the request itself is wrong ---------------------------------------


class InvalidRequest(BrokerError):
    """Raised when a request fails schema validation (wrong type, unknown field...)."""

    status = 400
    code = "INVALID_REQUEST"
    title = "Invalid request"


class InvalidRequestBody(InvalidRequest):
    """Raised when the body is not well-formed JSON or not valid UTF-8."""

    code = "INVALID_REQUEST_BODY"
    title = "Request body is not valid JSON"


class InvalidCursor(InvalidRequest):
    """Raised when a pagination cursor was not produced by this service."""

    code = "INVALID_CURSOR"
    title = "Invalid pagination cursor"


class UnknownActionType(InvalidRequest):
    """Raised when ``actionType`` is not in the action catalog."""

    code = "UNKNOWN_ACTION_TYPE"
    title = "Unknown action type"


class InvalidProviderState(InvalidRequest):
    """Raised when the provider's opaque ``state`` is too long or not printable."""

    code = "INVALID_STATE_PARAMETER"
    title = "Invalid provider state"


class CallbackUrlRejected(InvalidRequest):
    """Base for every callback URL refusal; each subclass names the reason."""

    code = "CALLBACK_URL_INVALID"
    title = "Callback URL is not acceptable"


class CallbackUrlMalformed(CallbackUrlRejected):
    """Raised when the URL does not parse as an absolute http(s) URL."""

    code = "CALLBACK_URL_MALFORMED"
    title = "Callback URL is malformed"


class CallbackUrlTooLong(CallbackUrlRejected):
    """Raised when the URL is longer than the allowed maximum."""

    code = "CALLBACK_URL_TOO_LONG"
    title = "Callback URL is too long"


class CallbackUrlForbiddenCharacters(CallbackUrlRejected):
    """Raised on whitespace, control characters or non-ASCII text (look-alikes)."""

    code = "CALLBACK_URL_FORBIDDEN_CHARACTERS"
    title = "Callback URL contains forbidden characters"


class CallbackUrlSchemeNotAllowed(CallbackUrlRejected):
    """Raised for a scheme other than http or https (javascript:, data:, ftp:...)."""

    code = "CALLBACK_URL_SCHEME_NOT_ALLOWED"
    title = "Callback URL scheme is not allowed"


class CallbackUrlBackslash(CallbackUrlRejected):
    """Raised when the URL contains a backslash (browsers read it as a slash)."""

    code = "CALLBACK_URL_BACKSLASH"
    title = "Callback URL must not contain a backslash"


class CallbackUrlInsecureHttp(CallbackUrlRejected):
    """Raised for plain http, except loopback hosts of a development provider."""

    code = "CALLBACK_URL_INSECURE_HTTP"
    title = "Callback URL must use https"


class CallbackUrlReservedParameter(CallbackUrlRejected):
    """Raised when the query uses a parameter name the broker adds on return."""

    code = "CALLBACK_URL_RESERVED_PARAMETER"
    title = "Callback URL uses a reserved query parameter"


class CallbackUrlUserinfo(CallbackUrlRejected):
    """Raised when the URL carries ``user:password@`` before the host."""

    code = "CALLBACK_URL_USERINFO"
    title = "Callback URL must not contain credentials"


class CallbackUrlFragment(CallbackUrlRejected):
    """Raised when the URL carries a ``#fragment``."""

    code = "CALLBACK_URL_FRAGMENT"
    title = "Callback URL must not contain a fragment"


class CallbackUrlEncodingTrick(CallbackUrlRejected):
    """Raised on percent-encoded separators, dots or bytes in the authority or path."""

    code = "CALLBACK_URL_ENCODED_CHARACTERS"
    title = "Callback URL contains suspicious percent-encoding"


class CallbackUrlNotAllowed(CallbackUrlRejected):
    """Raised when a well-formed URL matches none of the provider's allowed callbacks."""

    code = "CALLBACK_URL_NOT_ALLOWED"
    title = "Callback URL is not on the provider's allow-list"


class WebhookUrlBlocked(CallbackUrlRejected):
    """Raised when a webhook URL targets (or resolves to) a private or reserved address."""

    code = "WEBHOOK_URL_BLOCKED"
    title = "Webhook URL targets a private or reserved address"


class DevelopmentProviderInProduction(InvalidRequest):
    """Raised when a development provider is created (or used) in production mode."""

    code = "DEVELOPMENT_PROVIDER_IN_PRODUCTION"
    title = "Development providers are refused in production mode"


# -- 401 / 404 / 409 / 413 / 415 ---------------------------------------------


class Unauthenticated(BrokerError):
    """Raised when the API key is missing, unknown, expired or revoked."""

    status = 401
    code = "UNAUTHENTICATED"
    title = "Missing or invalid API key"


class NotFound(BrokerError):
    """Raised when a resource does not exist or belongs to another provider."""

    status = 404
    code = "NOT_FOUND"
    title = "Not found"


class EnterpriseNotFound(NotFound):
    """Raised for an unknown enterprise id, or another provider's enterprise."""

    code = "ENTERPRISE_NOT_FOUND"
    title = "Enterprise not found"


class ActionItemNotFound(NotFound):
    """Raised for an unknown action item id, or another provider's action item."""

    code = "ACTION_ITEM_NOT_FOUND"
    title = "Action item not found"


class Conflict(BrokerError):
    """Base for requests that clash with the current state of a resource."""

    status = 409
    code = "CONFLICT"
    title = "Conflict"


class EnterpriseExternalIdTaken(Conflict):
    """Raised when the provider already has an enterprise with that external id."""

    code = "ENTERPRISE_EXTERNAL_ID_TAKEN"
    title = "An enterprise with this external id already exists"


class EnterpriseNotRegistered(Conflict):
    """Raised for a consent or login action on an enterprise not yet registered."""

    code = "ENTERPRISE_NOT_REGISTERED"
    title = "Enterprise is not registered with Microsoft yet"


class EnterpriseAlreadyRegistered(Conflict):
    """Raised for REGISTRATION on a registered enterprise without ``reregister``."""

    code = "ENTERPRISE_ALREADY_REGISTERED"
    title = "Enterprise is already registered"


class ActionItemNotRevocable(Conflict):
    """Raised when revoking an action item that is completed, failed or pending."""

    code = "ACTION_ITEM_NOT_REVOCABLE"
    title = "Action item can no longer be revoked"


class PayloadTooLarge(BrokerError):
    """Raised when the request body exceeds the configured maximum."""

    status = 413
    code = "PAYLOAD_TOO_LARGE"
    title = "Request body too large"


class UnsupportedMediaType(BrokerError):
    """Raised when the request body is not ``application/json``."""

    status = 415
    code = "UNSUPPORTED_MEDIA_TYPE"
    title = "Unsupported media type"


class MethodNotAllowed(BrokerError):
    """Raised when the path exists but not with this HTTP method."""

    status = 405
    code = "METHOD_NOT_ALLOWED"
    title = "Method not allowed"


class TeamsAppPackageInvalid(InvalidRequest):
    """Raised when an uploaded Teams app package breaks a zip-safety or manifest rule.

    ``extra["defects"]`` lists every defect found (code, detail, field).
    """

    code = "TEAMS_APP_PACKAGE_INVALID"
    title = "The Teams app package is not valid"


class TeamsAppPackageTooLarge(PayloadTooLarge):
    """Raised when a Teams app package exceeds CTT_TEAMS_APP_PACKAGE_MAX_BYTES."""

    code = "TEAMS_APP_PACKAGE_TOO_LARGE"
    title = "The Teams app package is too large"


class TeamsAppPackageNotFound(NotFound):
    """Raised for an unknown package id, or another provider's package."""

    code = "TEAMS_APP_PACKAGE_NOT_FOUND"
    title = "Teams app package not found"


class TeamsAppPackageDuplicate(Conflict):
    """Raised when the provider already uploaded this version of this app (manifest id)."""

    code = "TEAMS_APP_PACKAGE_DUPLICATE"
    title = "This version of the app is already uploaded"


class TeamsAppIdTaken(Conflict):
    """Raised when another provider's packages already use this manifest id."""

    code = "TEAMS_APP_ID_TAKEN"
    title = "Another provider uses this Teams app id"


class InternalError(BrokerError):
    """Raised (or substituted) for a failure that is our fault; never expected."""


# -- not HTTP: operator mistakes at the console ------------------------------


class EventNotFound(NotFound):
    """Raised for an unknown event id, or another provider's event."""

    code = "EVENT_NOT_FOUND"
    title = "Event not found"


class DeliveryInProgress(Conflict):
    """Raised when asking to redeliver an event while an attempt is in flight."""

    code = "DELIVERY_IN_PROGRESS"
    title = "The event is being delivered right now"


class WebhookNotConfigured(Conflict):
    """Raised when asking to redeliver for a provider that has no webhook URL."""

    code = "WEBHOOK_NOT_CONFIGURED"
    title = "No webhook URL is configured"


class ProviderNotFound(NotFound):
    """Raised by provider management when the provider id or name is unknown."""

    code = "PROVIDER_NOT_FOUND"
    title = "Provider not found"


class ProviderNameTaken(Conflict):
    """Raised when creating a provider whose name is already used."""

    code = "PROVIDER_NAME_TAKEN"
    title = "A provider with this name already exists"


class ApiKeyNotFound(NotFound):
    """Raised when revoking a key id that the provider does not have."""

    code = "API_KEY_NOT_FOUND"
    title = "API key not found"


class ServiceUnavailable(BrokerError):
    """Raised when the database is unreachable or not current, or the instance is saturated.

    The answer carries ``Retry-After`` (``extra["retry_after"]``, default 5 s).
    """

    status = 503
    code = "SERVICE_UNAVAILABLE"
    title = "Service unavailable"


# -- abuse limits: answered before the request reaches a handler ------------


class TooManyParameters(InvalidRequest):
    """Raised when a query carries more parameters than its route allows."""

    code = "TOO_MANY_PARAMETERS"
    title = "Too many query parameters"


class UriTooLong(BrokerError):
    """Raised when the query string is longer than its route allows."""

    status = 414
    code = "URI_TOO_LONG"
    title = "Request address too long"


class HeadersTooLarge(BrokerError):
    """Raised when the request has too many header fields or one is too long."""

    status = 431
    code = "HEADERS_TOO_LARGE"
    title = "Request headers too large"


class RateLimited(BrokerError):
    """Raised when a client IP, API key or link exceeds its rate limit.

    The answer carries ``Retry-After`` (``extra["retry_after"]``).
    """

    status = 429
    code = "RATE_LIMITED"
    title = "Too many requests"


# -- the admin's round trip through Microsoft (browser-facing) ---------------


class StateInvalid(BrokerError):
    """Raised when a returned ``state`` is malformed, forged, or meant for someone else.

    Covers a bad signature, an unexpected algorithm or ``typ``, a wrong ``iss``
    or ``aud``, an unknown key id and missing claims.
    """

    status = 400
    code = "STATE_INVALID"
    title = "This sign-in link is not valid"


class StateExpired(StateInvalid):
    """Raised when a returned ``state`` is past its ``exp`` (the flow took too long)."""

    code = "STATE_EXPIRED"
    title = "This sign-in took too long"


class StateReplayed(StateInvalid):
    """Raised when the flow record of a ``state`` was already consumed."""

    status = 409
    code = "STATE_REPLAYED"
    title = "This sign-in was already completed"


class BrowserBindingMismatch(StateInvalid):
    """Raised when the callback arrives without the browser-binding cookie of its flow."""

    status = 403
    code = "BROWSER_BINDING_MISMATCH"
    title = "This sign-in was started in another browser"


class IdTokenInvalid(BrokerError):
    """Raised when Microsoft's ID token fails validation (signature, claims, nonce...)."""

    status = 502
    code = "ID_TOKEN_INVALID"
    title = "Microsoft's answer could not be verified"


class MicrosoftUnavailable(BrokerError):
    """Raised when Microsoft answers 5xx, cannot be reached, or its keys cannot be fetched."""

    status = 503
    code = "MICROSOFT_UNAVAILABLE"
    title = "Microsoft is not answering"


class MicrosoftTimeout(MicrosoftUnavailable):
    """Raised when a call to Microsoft exceeds CTT_MICROSOFT_TIMEOUT_SECONDS."""

    status = 504
    code = "MICROSOFT_TIMEOUT"
    title = "Microsoft took too long to answer"


class MicrosoftError(BrokerError):
    """Raised for a Microsoft error we have no more specific code for (see ``detail``)."""

    status = 502
    code = "MICROSOFT_ERROR"
    title = "Microsoft refused the request"


class MicrosoftResponseInvalid(MicrosoftError):
    """Raised when Microsoft's return carries missing, repeated, oversized or malformed fields.

    Only after the ``state`` checked out: the action item ends ``failed`` with this code.
    """

    status = 400
    code = "MICROSOFT_RESPONSE_INVALID"
    title = "Microsoft's answer was malformed"


class InvalidGrant(MicrosoftError):
    """Raised when Microsoft refuses the authorization code (used, expired, or PKCE mismatch)."""

    status = 400
    code = "INVALID_GRANT"
    title = "Microsoft refused the sign-in code"


class ConsentDeclined(BrokerError):
    """Raised when the admin cancels at Microsoft (``access_denied``, AADSTS65004)."""

    status = 403
    code = "CONSENT_DECLINED"
    title = "The request was declined at Microsoft"


class NotGlobalAdmin(BrokerError):
    """Raised when the account is not a Global Administrator (``wids`` lacks the role)."""

    status = 403
    code = "NOT_GLOBAL_ADMIN"
    title = "A Global Administrator must do this"


class NotTeamsAdmin(BrokerError):
    """Raised when DEPLOY_TEAMS_APPS is signed by neither a Global nor a Teams Administrator."""

    status = 403
    code = "NOT_TEAMS_ADMIN"
    title = "A Teams Administrator or Global Administrator must do this"


class TeamsAppDeployFailed(BrokerError):
    """Raised (as an outcome) when at least one app could not be published or updated.

    The per-app detail, with Graph's own error code, is in the result payload.
    """

    status = 502
    code = "TEAMS_APP_DEPLOY_FAILED"
    title = "Some Teams apps could not be deployed"


class PersonalAccountNotAllowed(BrokerError):
    """Raised when a personal Microsoft account signs in instead of a work account."""

    status = 403
    code = "PERSONAL_ACCOUNT_NOT_ALLOWED"
    title = "Sign in with a work account"


class LoginWrongTenant(BrokerError):
    """Raised when LOGIN_ENTERPRISE_ADMIN comes back from a tenant other than the enterprise's."""

    status = 403
    code = "LOGIN_WRONG_TENANT"
    title = "This account belongs to another organisation"


class TenantAlreadyRegistered(Conflict):
    """Raised when REGISTRATION returns a tenant bound to another of the provider's enterprises."""

    code = "TENANT_ALREADY_REGISTERED"
    title = "This Microsoft tenant is already registered"


class ConsentNotConfirmed(BrokerError):
    """Raised when the app-only token for the tenant lacks the consented roles or tenant."""

    status = 502
    code = "CONSENT_NOT_CONFIRMED"
    title = "The consent could not be confirmed"


# -- the admin's link (HTML pages only) ---------------------------------------


class LinkNotFound(NotFound):
    """Raised when ``/actions/{handle}`` names no action item."""

    code = "LINK_NOT_FOUND"
    title = "This link is not valid"


class LinkExpired(BrokerError):
    """Raised when the action item behind a link has expired."""

    status = 410
    code = "LINK_EXPIRED"
    title = "This link has expired"


class LinkRevoked(LinkExpired):
    """Raised when the provider revoked the action item behind a link."""

    code = "LINK_REVOKED"
    title = "This link was withdrawn"


class LinkUsed(Conflict):
    """Raised when the action item behind a link is already completed or failed."""

    code = "LINK_USED"
    title = "This link was already used"


class CallbackNoLongerAllowed(Conflict):
    """Raised when the stored callback URL left the provider's allow-list during the flow."""

    code = "CALLBACK_NO_LONGER_ALLOWED"
    title = "The return address is no longer approved"


class FlowInProgress(Conflict):
    """Raised when another request holds the claim on this flow (a double click, a racing tab).

    The claim is a short lease: try again in a moment to see the outcome.
    """

    code = "FLOW_IN_PROGRESS"
    title = "This sign-in is being completed"


class CompletionInterrupted(BrokerError):
    """Recorded when a flow reached Microsoft but its outcome could not be stored in time.

    The worker ends such an action item ``failed`` with this code once the flow's claim
    and lifetime have both run out (the database failed mid-callback and nobody retried).
    """

    status = 500
    code = "COMPLETION_INTERRUPTED"
    title = "The sign-in was interrupted"


class ResultCodeInvalid(NotFound):
    """Raised when a ``resultCode`` is unknown, expired, already redeemed, or another provider's."""

    code = "RESULT_CODE_INVALID"
    title = "Result code not found"


def all_error_classes() -> list[type[BrokerError]]:
    """Every concrete error class, for the spec-and-code agreement test."""
    seen: list[type[BrokerError]] = []
    stack: list[type[BrokerError]] = [BrokerError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen
