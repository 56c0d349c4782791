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
    #: What happened, in plain words for an Enterprise Admin (shown on pages, sent as ``message``).
    message: ClassVar[str] = "Something went wrong on our side."
    #: What the admin can do next.
    next_step: ClassVar[str] = (
        "Try again in a few minutes. If it keeps happening, contact your provider's support."
    )
    #: Whether trying the same thing again can help.
    retry_helps: ClassVar[bool] = True
    #: For the provider's developers: when this code comes back and what to change.
    guidance: ClassVar[str] = "Unexpected failure on our side."

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra: Mapping[str, Any] = extra

    def concerning(self, provider_id: str) -> BrokerError:
        """Mark this error with the provider of the link it is about (for the way back)."""
        self.extra = {**self.extra, "provider_id": provider_id}
        return self


# -- 400: the request itself is wrong ---------------------------------------


class InvalidRequest(BrokerError):
    """Raised when a request fails schema validation (wrong type, unknown field...)."""

    status = 400
    code = "INVALID_REQUEST"
    title = "Invalid request"
    message = "Your provider's portal sent a request this service could not accept."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = (
        "A parameter or body field is missing, of the wrong type, unknown or out of range "
        "(`field` names it)."
    )


class InvalidRequestBody(InvalidRequest):
    """Raised when the body is not well-formed JSON or not valid UTF-8."""

    code = "INVALID_REQUEST_BODY"
    title = "Request body is not valid JSON"
    message = "Your provider's portal sent a request this service could not read."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "The body is not valid UTF-8 JSON."


class InvalidCursor(InvalidRequest):
    """Raised when a pagination cursor was not produced by this service."""

    code = "INVALID_CURSOR"
    title = "Invalid pagination cursor"
    message = "Your provider's portal asked for a page of results that does not exist."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "The pagination cursor is not an id of the listed kind."


class UnknownActionType(InvalidRequest):
    """Raised when ``actionType`` is not in the action catalog."""

    code = "UNKNOWN_ACTION_TYPE"
    title = "Unknown action type"
    message = "Your provider's portal asked for a step this service does not offer."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "`actionType` is not in the catalog."


class InvalidProviderState(InvalidRequest):
    """Raised when the provider's opaque ``state`` is too long or not printable."""

    code = "INVALID_STATE_PARAMETER"
    title = "Invalid provider state"
    message = "Your provider's portal sent a request this service could not accept."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "`state` is too long or not printable ASCII."


class CallbackUrlRejected(InvalidRequest):
    """Base for every callback URL refusal; each subclass names the reason."""

    code = "CALLBACK_URL_INVALID"
    title = "Callback URL is not acceptable"
    message = "Your provider's portal gave a return address this service does not accept."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "Generic callback refusal (parent of the codes below)."


class CallbackUrlMalformed(CallbackUrlRejected):
    """Raised when the URL does not parse as an absolute http(s) URL."""

    code = "CALLBACK_URL_MALFORMED"
    title = "Callback URL is malformed"
    message = "Your provider's portal gave a return address that is not a valid web address."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "Not an absolute URL with a valid host, port and path."


class CallbackUrlTooLong(CallbackUrlRejected):
    """Raised when the URL is longer than the allowed maximum."""

    code = "CALLBACK_URL_TOO_LONG"
    title = "Callback URL is too long"
    message = "Your provider's portal gave a return address that is too long."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "Longer than 2048 characters."


class CallbackUrlForbiddenCharacters(CallbackUrlRejected):
    """Raised on whitespace, control characters or non-ASCII text (look-alikes)."""

    code = "CALLBACK_URL_FORBIDDEN_CHARACTERS"
    title = "Callback URL contains forbidden characters"
    message = "Your provider's portal gave a return address with characters that are not allowed."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "Whitespace, control or non-ASCII characters."


class CallbackUrlSchemeNotAllowed(CallbackUrlRejected):
    """Raised for a scheme other than http or https (javascript:, data:, ftp:...)."""

    code = "CALLBACK_URL_SCHEME_NOT_ALLOWED"
    title = "Callback URL scheme is not allowed"
    message = "Your provider's portal gave a return address that is not a web address."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "A scheme other than https/http (javascript:, data:, ...)."


class CallbackUrlBackslash(CallbackUrlRejected):
    """Raised when the URL contains a backslash (browsers read it as a slash)."""

    code = "CALLBACK_URL_BACKSLASH"
    title = "Callback URL must not contain a backslash"
    message = "Your provider's portal gave a return address with characters that are not allowed."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "Contains a backslash."


class CallbackUrlInsecureHttp(CallbackUrlRejected):
    """Raised for plain http, except loopback hosts of a development provider."""

    code = "CALLBACK_URL_INSECURE_HTTP"
    title = "Callback URL must use https"
    message = "Your provider's portal gave a return address that is not secure (not https)."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "Plain http outside loopback for development providers."


class CallbackUrlReservedParameter(CallbackUrlRejected):
    """Raised when the query uses a parameter name the broker adds on return."""

    code = "CALLBACK_URL_RESERVED_PARAMETER"
    title = "Callback URL uses a reserved query parameter"
    message = "Your provider's portal gave a return address this service does not accept."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "The query uses a name the broker adds on return."


class CallbackUrlUserinfo(CallbackUrlRejected):
    """Raised when the URL carries ``user:password@`` before the host."""

    code = "CALLBACK_URL_USERINFO"
    title = "Callback URL must not contain credentials"
    message = "Your provider's portal gave a return address that contains a password."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "Credentials before the host (`user@host`)."


class CallbackUrlFragment(CallbackUrlRejected):
    """Raised when the URL carries a ``#fragment``."""

    code = "CALLBACK_URL_FRAGMENT"
    title = "Callback URL must not contain a fragment"
    message = "Your provider's portal gave a return address this service does not accept."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "Contains a `#fragment`."


class CallbackUrlEncodingTrick(CallbackUrlRejected):
    """Raised on percent-encoded separators, dots or bytes in the authority or path."""

    code = "CALLBACK_URL_ENCODED_CHARACTERS"
    title = "Callback URL contains suspicious percent-encoding"
    message = "Your provider's portal gave a return address with disguised characters."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "Percent-encoded host, separator, dot, control or non-ASCII byte."


class CallbackUrlNotAllowed(CallbackUrlRejected):
    """Raised when a well-formed URL matches none of the provider's allowed callbacks."""

    code = "CALLBACK_URL_NOT_ALLOWED"
    title = "Callback URL is not on the provider's allow-list"
    message = "Your provider's portal gave a return address that your provider has not approved."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = (
        "Scheme, host, port or path differ from every allowed callback; the problem lists "
        "`allowedCallbacks` and any `nearMisses` (trailing slash, path case, scheme, port)."
    )


class WebhookUrlBlocked(CallbackUrlRejected):
    """Raised when a webhook URL targets (or resolves to) a private or reserved address."""

    code = "WEBHOOK_URL_BLOCKED"
    title = "Webhook URL targets a private or reserved address"
    message = "Your provider's settings point to an address this service will not contact."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "The webhook URL targets a private, reserved or tunnelled address."


class DevelopmentProviderInProduction(InvalidRequest):
    """Raised when a development provider is created (or used) in production mode."""

    code = "DEVELOPMENT_PROVIDER_IN_PRODUCTION"
    title = "Development providers are refused in production mode"
    message = "Your provider is set up for testing only."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "Development providers are refused in production mode."


# -- 401 / 404 / 409 / 413 / 415 ---------------------------------------------


class Unauthenticated(BrokerError):
    """Raised when the API key is missing, unknown, expired or revoked."""

    status = 401
    code = "UNAUTHENTICATED"
    title = "Missing or invalid API key"
    message = "Your provider's portal could not prove who it is to this service."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "API key missing, malformed, unknown, expired or revoked."


class NotFound(BrokerError):
    """Raised when a resource does not exist or belongs to another provider."""

    status = 404
    code = "NOT_FOUND"
    title = "Not found"
    message = "This page does not exist."
    next_step = "Check the address, or return to your provider's portal and start again from there."
    retry_helps = False
    guidance = "No such route or resource."


class EnterpriseNotFound(NotFound):
    """Raised for an unknown enterprise id, or another provider's enterprise."""

    code = "ENTERPRISE_NOT_FOUND"
    title = "Enterprise not found"
    message = "Your organisation is not known to this service."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "No such enterprise for this provider."


class ActionItemNotFound(NotFound):
    """Raised for an unknown action item id, or another provider's action item."""

    code = "ACTION_ITEM_NOT_FOUND"
    title = "Action item not found"
    message = "This step is not known to this service."
    next_step = "Return to your provider's portal and start again from there."
    retry_helps = False
    guidance = "No such action item for this provider."


class Conflict(BrokerError):
    """Base for requests that clash with the current state of a resource."""

    status = 409
    code = "CONFLICT"
    title = "Conflict"
    message = "This cannot be done while things stand as they are."
    next_step = "Return to your provider's portal and start again from there."
    retry_helps = False
    guidance = (
        "The request clashes with the current state (e.g. tenant bound to another enterprise)."
    )


class EnterpriseExternalIdTaken(Conflict):
    """Raised when the provider already has an enterprise with that external id."""

    code = "ENTERPRISE_EXTERNAL_ID_TAKEN"
    title = "An enterprise with this external id already exists"
    message = "Your organisation is already set up with your provider."
    next_step = "Return to your provider's portal and start again from there."
    retry_helps = False
    guidance = (
        "The provider already has an enterprise with this external id; the problem's "
        "`enterpriseId` names it."
    )


class EnterpriseNotRegistered(Conflict):
    """Raised for a consent or login action on an enterprise not yet registered."""

    code = "ENTERPRISE_NOT_REGISTERED"
    title = "Enterprise is not registered with Microsoft yet"
    message = (
        "Your organisation must first be connected to Microsoft through your provider's portal."
    )
    next_step = "Complete the registration step in your provider's portal first."
    retry_helps = False
    guidance = "The action needs a registered enterprise."


class EnterpriseAlreadyRegistered(Conflict):
    """Raised for REGISTRATION on a registered enterprise without ``reregister``."""

    code = "ENTERPRISE_ALREADY_REGISTERED"
    title = "Enterprise is already registered"
    message = "Your organisation is already connected to Microsoft."
    next_step = (
        "Nothing more to do here. Return to your provider's portal and start again from there."
    )
    retry_helps = False
    guidance = "REGISTRATION on a registered enterprise without `reregister`."


class ActionItemNotRevocable(Conflict):
    """Raised when revoking an action item that is completed, failed or pending."""

    code = "ACTION_ITEM_NOT_REVOCABLE"
    title = "Action item can no longer be revoked"
    message = "This step is already finished."
    next_step = "Return to your provider's portal and start again from there."
    retry_helps = False
    guidance = "The action item is completed, failed or pending."


class PayloadTooLarge(BrokerError):
    """Raised when the request body exceeds the configured maximum."""

    status = 413
    code = "PAYLOAD_TOO_LARGE"
    title = "Request body too large"
    message = "The request was too large."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "The body exceeds the configured maximum."


class UnsupportedMediaType(BrokerError):
    """Raised when the request body is not ``application/json``."""

    status = 415
    code = "UNSUPPORTED_MEDIA_TYPE"
    title = "Unsupported media type"
    message = "Your provider's portal sent a request in a form this service does not read."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "The body is not `application/json`."


class MethodNotAllowed(BrokerError):
    """Raised when the path exists but not with this HTTP method."""

    status = 405
    code = "METHOD_NOT_ALLOWED"
    title = "Method not allowed"
    message = "This page cannot be used this way."
    next_step = "Return to your provider's portal and start again from there."
    retry_helps = False
    guidance = "The route exists, not with this method."


class TeamsAppPackageInvalid(InvalidRequest):
    """Raised when an uploaded Teams app package breaks a zip-safety or manifest rule.

    ``extra["defects"]`` lists every defect found (code, detail, field).
    """

    code = "TEAMS_APP_PACKAGE_INVALID"
    title = "The Teams app package is not valid"
    message = "A Teams app package is not valid."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = (
        "The Teams app package is not a safe zip or breaks a manifest rule (`defects` lists each)."
    )


class TeamsAppPackageTooLarge(PayloadTooLarge):
    """Raised when a Teams app package exceeds CTT_TEAMS_APP_PACKAGE_MAX_BYTES."""

    code = "TEAMS_APP_PACKAGE_TOO_LARGE"
    title = "The Teams app package is too large"
    message = "A Teams app package is too large."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "The package exceeds CTT_TEAMS_APP_PACKAGE_MAX_BYTES."


class TeamsAppPackageNotFound(NotFound):
    """Raised for an unknown package id, or another provider's package."""

    code = "TEAMS_APP_PACKAGE_NOT_FOUND"
    title = "Teams app package not found"
    message = "Your provider has no Teams apps to deploy."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "No such Teams app package for this provider (or none to deploy)."


class TeamsAppPackageDuplicate(Conflict):
    """Raised when the provider already uploaded this version of this app (manifest id)."""

    code = "TEAMS_APP_PACKAGE_DUPLICATE"
    title = "This version of the app is already uploaded"
    message = "This version of the app is already uploaded."
    next_step = "Upload a higher version."
    retry_helps = False
    guidance = "This version of this app (manifest id) is already uploaded."


class TeamsAppIdTaken(Conflict):
    """Raised when another provider's packages already use this manifest id."""

    code = "TEAMS_APP_ID_TAKEN"
    title = "Another provider uses this Teams app id"
    message = "Another provider already uses this Teams app."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "Another provider's packages use this manifest id."


class InternalError(BrokerError):
    """Raised (or substituted) for a failure that is our fault; never expected."""


# -- not HTTP: operator mistakes at the console ------------------------------


class EventNotFound(NotFound):
    """Raised for an unknown event id, or another provider's event."""

    code = "EVENT_NOT_FOUND"
    title = "Event not found"
    message = "This event is not known to this service."
    next_step = "Check the event id."
    retry_helps = False
    guidance = "No such event for this provider."


class DeliveryInProgress(Conflict):
    """Raised when asking to redeliver an event while an attempt is in flight."""

    code = "DELIVERY_IN_PROGRESS"
    title = "The event is being delivered right now"
    message = "This event is being delivered right now."
    next_step = "Wait a moment, then try again."
    retry_helps = True
    guidance = "A webhook attempt for this event is in flight."


class WebhookNotConfigured(Conflict):
    """Raised when asking to redeliver for a provider that has no webhook URL."""

    code = "WEBHOOK_NOT_CONFIGURED"
    title = "No webhook URL is configured"
    message = "No webhook address is set up."
    next_step = "Set a webhook address first."
    retry_helps = False
    guidance = "The provider has no webhook URL."


class ProviderNotFound(NotFound):
    """Raised by provider management when the provider id or name is unknown."""

    code = "PROVIDER_NOT_FOUND"
    title = "Provider not found"
    message = "The provider is not known to this service."
    next_step = "Check the provider's name or id."
    retry_helps = False
    guidance = "Console only: no such provider."


class ProviderNameTaken(Conflict):
    """Raised when creating a provider whose name is already used."""

    code = "PROVIDER_NAME_TAKEN"
    title = "A provider with this name already exists"
    message = "A provider with this name already exists."
    next_step = "Choose another name."
    retry_helps = False
    guidance = "Console only: a provider with this name exists."


class ApiKeyNotFound(NotFound):
    """Raised when revoking a key id that the provider does not have."""

    code = "API_KEY_NOT_FOUND"
    title = "API key not found"
    message = "The provider has no such key."
    next_step = "Check the key id."
    retry_helps = False
    guidance = "Console only: the provider has no such key."


class ServiceUnavailable(BrokerError):
    """Raised when the database is unreachable or not current, or the instance is saturated.

    The answer carries ``Retry-After`` (``extra["retry_after"]``, default 5 s).
    """

    status = 503
    code = "SERVICE_UNAVAILABLE"
    title = "Service unavailable"
    message = "This service is briefly unavailable."
    next_step = "Wait a minute, then try again."
    retry_helps = True
    guidance = (
        "The database is unreachable or not migrated, or the instance is at its concurrency "
        "limit; see `Retry-After`."
    )


# -- abuse limits: answered before the request reaches a handler ------------


class TooManyParameters(InvalidRequest):
    """Raised when a query carries more parameters than its route allows."""

    code = "TOO_MANY_PARAMETERS"
    title = "Too many query parameters"
    message = "The address you opened carries too much information."
    next_step = "Return to your provider's portal and start again from there."
    retry_helps = False
    guidance = "The query or form carries more parameters than the route allows."


class UriTooLong(BrokerError):
    """Raised when the query string is longer than its route allows."""

    status = 414
    code = "URI_TOO_LONG"
    title = "Request address too long"
    message = "The address you opened is too long."
    next_step = "Return to your provider's portal and start again from there."
    retry_helps = False
    guidance = "The query string is longer than the route allows."


class HeadersTooLarge(BrokerError):
    """Raised when the request has too many header fields or one is too long."""

    status = 431
    code = "HEADERS_TOO_LARGE"
    title = "Request headers too large"
    message = "Your browser sent more information than this service accepts."
    next_step = "Clear this site's cookies, then start again from your provider's portal."
    retry_helps = True
    guidance = "Too many header fields, or one too long."


class RateLimited(BrokerError):
    """Raised when a client IP, API key or link exceeds its rate limit.

    The answer carries ``Retry-After`` (``extra["retry_after"]``).
    """

    status = 429
    code = "RATE_LIMITED"
    title = "Too many requests"
    message = "There were too many attempts from here in a short time."
    next_step = "Wait a minute, then try again."
    retry_helps = True
    guidance = "Too many requests from this client IP, API key or link; see `Retry-After`."


# -- the admin's round trip through Microsoft (browser-facing) ---------------


class StateInvalid(BrokerError):
    """Raised when a returned ``state`` is malformed, forged, or meant for someone else.

    Covers a bad signature, an unexpected algorithm or ``typ``, a wrong ``iss``
    or ``aud``, an unknown key id and missing claims.
    """

    status = 400
    code = "STATE_INVALID"
    title = "This sign-in link is not valid"
    message = "This sign-in could not be matched to a request from your provider."
    next_step = "Return to your provider's portal and start again from there."
    retry_helps = True
    guidance = "Admin flow: the returned state is malformed, forged or for another audience."


class StateExpired(StateInvalid):
    """Raised when a returned ``state`` is past its ``exp`` (the flow took too long)."""

    code = "STATE_EXPIRED"
    title = "This sign-in took too long"
    message = "The sign-in at Microsoft took too long."
    next_step = "Return to your provider's portal and start again from there."
    retry_helps = True
    guidance = "Admin flow: the round trip through Microsoft took too long."


class StateReplayed(StateInvalid):
    """Raised when the flow record of a ``state`` was already consumed."""

    status = 409
    code = "STATE_REPLAYED"
    title = "This sign-in was already completed"
    message = "This sign-in was already completed."
    next_step = "Nothing more to do here. Return to your provider's portal to see the result."
    retry_helps = False
    guidance = "Admin flow: this state was already used."


class BrowserBindingMismatch(StateInvalid):
    """Raised when the callback arrives without the browser-binding cookie of its flow."""

    status = 403
    code = "BROWSER_BINDING_MISMATCH"
    title = "This sign-in was started in another browser"
    message = "The sign-in finished in a different browser from the one where it started."
    next_step = (
        "Open your provider's portal in this browser and click its button again, then finish "
        "the sign-in here."
    )
    retry_helps = True
    guidance = "Admin flow: the callback came from another browser than the click."


class IdTokenInvalid(BrokerError):
    """Raised when Microsoft's ID token fails validation (signature, claims, nonce...)."""

    status = 502
    code = "ID_TOKEN_INVALID"
    title = "Microsoft's answer could not be verified"
    message = "Microsoft's answer could not be verified, so nothing was changed."
    next_step = "Return to your provider's portal and start again from there."
    retry_helps = True
    guidance = "Admin flow: Microsoft's ID token failed validation."


class MicrosoftUnavailable(BrokerError):
    """Raised when Microsoft answers 5xx, cannot be reached, or its keys cannot be fetched."""

    status = 503
    code = "MICROSOFT_UNAVAILABLE"
    title = "Microsoft is not answering"
    message = "Microsoft is not answering right now."
    next_step = "Wait a few minutes, then start again from your provider's portal."
    retry_helps = True
    guidance = (
        "Admin flow: Microsoft answered 5xx, could not be reached, or its keys could not be "
        "fetched."
    )


class MicrosoftTimeout(MicrosoftUnavailable):
    """Raised when a call to Microsoft exceeds CTT_MICROSOFT_TIMEOUT_SECONDS."""

    status = 504
    code = "MICROSOFT_TIMEOUT"
    title = "Microsoft took too long to answer"
    message = "Microsoft took too long to answer."
    next_step = "Wait a few minutes, then start again from your provider's portal."
    retry_helps = True
    guidance = "Admin flow: Microsoft did not answer within CTT_MICROSOFT_TIMEOUT_SECONDS."


class MicrosoftError(BrokerError):
    """Raised for a Microsoft error we have no more specific code for (see ``detail``)."""

    status = 502
    code = "MICROSOFT_ERROR"
    title = "Microsoft refused the request"
    message = "Microsoft refused the request."
    next_step = (
        "Try again from your provider's portal. If it keeps happening, contact your "
        "provider's support with the reference below."
    )
    retry_helps = True
    guidance = "Admin flow: another Microsoft error (its AADSTS code is in the detail)."


class MicrosoftResponseInvalid(MicrosoftError):
    """Raised when Microsoft's return carries missing, repeated, oversized or malformed fields.

    Only after the ``state`` checked out: the action item ends ``failed`` with this code.
    """

    status = 400
    code = "MICROSOFT_RESPONSE_INVALID"
    title = "Microsoft's answer was malformed"
    message = "Microsoft's answer was incomplete or damaged, so nothing was changed."
    next_step = "Return to your provider's portal and start again from there."
    retry_helps = True
    guidance = (
        "Admin flow: Microsoft's return carried missing, repeated, oversized or malformed fields."
    )


class InvalidGrant(MicrosoftError):
    """Raised when Microsoft refuses the authorization code (used, expired, or PKCE mismatch)."""

    status = 400
    code = "INVALID_GRANT"
    title = "Microsoft refused the sign-in code"
    message = "Microsoft did not accept this sign-in any more."
    next_step = "Return to your provider's portal and start again from there."
    retry_helps = True
    guidance = "Admin flow: Microsoft refused the sign-in code (expired, reused, PKCE mismatch)."


class ConsentDeclined(BrokerError):
    """Raised when the admin cancels at Microsoft (``access_denied``, AADSTS65004)."""

    status = 403
    code = "CONSENT_DECLINED"
    title = "The request was declined at Microsoft"
    message = "The request was declined or cancelled at Microsoft, so nothing was changed."
    next_step = "If that was a mistake, start again from your provider's portal and accept."
    retry_helps = True
    guidance = "Admin flow: the admin declined or cancelled at Microsoft."


class NotGlobalAdmin(BrokerError):
    """Raised when the account is not a Global Administrator (``wids`` lacks the role)."""

    status = 403
    code = "NOT_GLOBAL_ADMIN"
    title = "A Global Administrator must do this"
    message = "The account you used is not a Global Administrator of your organisation."
    next_step = "Ask a Global Administrator to do this step, or start again and sign in as one."
    retry_helps = True
    guidance = "Admin flow: the account is not a Global Administrator (no 62e90394-... in `wids`)."


class NotTeamsAdmin(BrokerError):
    """Raised when DEPLOY_TEAMS_APPS is signed by neither a Global nor a Teams Administrator."""

    status = 403
    code = "NOT_TEAMS_ADMIN"
    title = "A Teams Administrator or Global Administrator must do this"
    message = "The account you used is neither a Teams Administrator nor a Global Administrator."
    next_step = (
        "Ask a Teams or Global Administrator to do this step, or start again and sign in as one."
    )
    retry_helps = True
    guidance = (
        "Admin flow: DEPLOY_TEAMS_APPS by neither a Global (62e90394-...) nor a Teams "
        "Administrator (69091246-...)."
    )


class TeamsAppDeployFailed(BrokerError):
    """Raised (as an outcome) when at least one app could not be published or updated.

    The per-app detail, with Graph's own error code, is in the result payload.
    """

    status = 502
    code = "TEAMS_APP_DEPLOY_FAILED"
    title = "Some Teams apps could not be deployed"
    message = (
        "Some of your provider's Teams apps could not be added to your organisation's app catalog."
    )
    next_step = (
        "Start again from your provider's portal. If it keeps happening, contact your "
        "provider's support."
    )
    retry_helps = True
    guidance = (
        "Admin flow: at least one app could not be published or updated (per-app detail in "
        "the result)."
    )


class PersonalAccountNotAllowed(BrokerError):
    """Raised when a personal Microsoft account signs in instead of a work account."""

    status = 403
    code = "PERSONAL_ACCOUNT_NOT_ALLOWED"
    title = "Sign in with a work account"
    message = "You signed in with a personal Microsoft account."
    next_step = "Start again from your provider's portal and sign in with your work account."
    retry_helps = True
    guidance = "Admin flow: a personal Microsoft account signed in."


class LoginWrongTenant(BrokerError):
    """Raised when LOGIN_ENTERPRISE_ADMIN comes back from a tenant other than the enterprise's."""

    status = 403
    code = "LOGIN_WRONG_TENANT"
    title = "This account belongs to another organisation"
    message = (
        "You signed in with an account from another organisation than the one your provider "
        "has on record."
    )
    next_step = (
        "Start again from your provider's portal and sign in with an administrator account of"
        " your own organisation."
    )
    retry_helps = True
    guidance = "Admin flow: LOGIN_ENTERPRISE_ADMIN from a tenant other than the enterprise's."


class TenantAlreadyRegistered(Conflict):
    """Raised when REGISTRATION returns a tenant bound to another of the provider's enterprises."""

    code = "TENANT_ALREADY_REGISTERED"
    title = "This Microsoft tenant is already registered"
    message = (
        "Your Microsoft organisation is already connected to another account with your provider."
    )
    next_step = "Contact your provider's support to move or remove the other account."
    retry_helps = False
    guidance = "Admin flow: the tenant is bound to another of the provider's enterprises."


class ConsentNotConfirmed(BrokerError):
    """Raised when the app-only token for the tenant lacks the consented roles or tenant."""

    status = 502
    code = "CONSENT_NOT_CONFIRMED"
    title = "The consent could not be confirmed"
    message = "Microsoft has not confirmed the permissions you granted."
    next_step = (
        "Wait a few minutes, then start again from your provider's portal. If it keeps "
        "happening, check the app's permissions in the Microsoft Entra admin center."
    )
    retry_helps = True
    guidance = "Admin flow: the app-only token lacks the tenant or the consented roles."


class ReturnPageOpenedDirectly(BrokerError):
    """Raised when ``/oauth/callback`` is opened without Microsoft's return (no ``state``).

    A bookmark, a typed address or a reload after the browser dropped the query:
    not a forged request, so the admin gets plain words rather than an API code.
    """

    status = 400
    code = "RETURN_PAGE_OPENED_DIRECTLY"
    title = "Nothing to finish on this page"
    message = (
        "This page is where Microsoft sends you back after a sign-in. "
        "Opened on its own, it has nothing to finish."
    )
    next_step = "Start from your provider's portal and click its button to begin."
    retry_helps = False
    guidance = (
        "Admin page: `/oauth/callback` was opened without Microsoft's return fields "
        "(bookmarked, typed, or reloaded without its query)."
    )


# -- the admin's link (HTML pages only) ---------------------------------------


class LinkNotFound(NotFound):
    """Raised when ``/actions/{handle}`` names no action item."""

    code = "LINK_NOT_FOUND"
    title = "This link is not valid"
    message = "This link is not valid."
    next_step = (
        "Check that you opened the whole link, or return to your provider's portal for a new one."
    )
    retry_helps = False
    guidance = "Admin page: the link names no action item."


class LinkExpired(BrokerError):
    """Raised when the action item behind a link has expired."""

    status = 410
    code = "LINK_EXPIRED"
    title = "This link has expired"
    message = "This link has expired."
    next_step = "Return to your provider's portal for a new link."
    retry_helps = False
    guidance = "Admin page: the link expired."


class LinkRevoked(LinkExpired):
    """Raised when the provider revoked the action item behind a link."""

    code = "LINK_REVOKED"
    title = "This link was withdrawn"
    message = "Your provider withdrew this link."
    next_step = "Return to your provider's portal for a new link."
    retry_helps = False
    guidance = "Admin page: the provider revoked the link."


class LinkUsed(Conflict):
    """Raised when the action item behind a link is already completed or failed."""

    code = "LINK_USED"
    title = "This link was already used"
    message = "This link was already used."
    next_step = "Nothing more to do here. Return to your provider's portal to see the result."
    retry_helps = False
    guidance = "Admin page: the link was already used."


class CallbackNoLongerAllowed(Conflict):
    """Raised when the stored callback URL left the provider's allow-list during the flow."""

    code = "CALLBACK_NO_LONGER_ALLOWED"
    title = "The return address is no longer approved"
    message = "Your provider no longer accepts the address this link would return you to."
    next_step = "Contact your provider's support; trying again will not help."
    retry_helps = False
    guidance = "Admin page: the stored callback URL left the allow-list during the flow."


class FlowInProgress(Conflict):
    """Raised when another request holds the claim on this flow (a double click, a racing tab).

    The claim is a short lease: try again in a moment to see the outcome.
    """

    code = "FLOW_IN_PROGRESS"
    title = "This sign-in is being completed"
    message = "This sign-in is being completed right now."
    next_step = "Reload this page in a moment to see the result."
    retry_helps = True
    guidance = "Admin flow: another request is completing this flow; reload in a moment."


class CompletionInterrupted(BrokerError):
    """Recorded when a flow reached Microsoft but its outcome could not be stored in time.

    The worker ends such an action item ``failed`` with this code once the flow's claim
    and lifetime have both run out (the database failed mid-callback and nobody retried).
    """

    status = 500
    code = "COMPLETION_INTERRUPTED"
    title = "The sign-in was interrupted"
    message = "Your sign-in reached Microsoft, but its result could not be saved in time."
    next_step = "Return to your provider's portal and start again from there."
    retry_helps = True
    guidance = (
        "Admin flow: the flow reached Microsoft but its outcome could not be stored before "
        "the flow expired."
    )


class ResultCodeInvalid(NotFound):
    """Raised when a ``resultCode`` is unknown, expired, already redeemed, or another provider's."""

    code = "RESULT_CODE_INVALID"
    title = "Result code not found"
    message = "This result is no longer available."
    next_step = "Return to your provider's portal and start again from there."
    retry_helps = False
    guidance = "The resultCode is unknown, expired, redeemed or another provider's."


def all_error_classes() -> list[type[BrokerError]]:
    """Every concrete error class, for the spec-and-code agreement test."""
    seen: list[type[BrokerError]] = []
    stack: list[type[BrokerError]] = [BrokerError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen
