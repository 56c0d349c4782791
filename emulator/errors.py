"""Entra-shaped errors: one exception type carrying the AADSTS code, OAuth error and status."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime


class EntraError(Exception):
    """An error Entra would report: on the token endpoint as JSON, on a page as HTML.

    `redirectable` errors happen after client_id and redirect_uri were validated, so the
    interactive endpoints send them back to the redirect URI; the others render an error page.
    """

    def __init__(
        self,
        aadsts: int,
        message: str,
        *,
        error: str = "invalid_request",
        status: int = 400,
        redirectable: bool = False,
    ) -> None:
        super().__init__(f"AADSTS{aadsts}: {message}")
        self.aadsts = aadsts
        self.message = message
        self.error = error
        self.status = status
        self.redirectable = redirectable

    def description(self, trace_id: str, correlation_id: str, timestamp: str) -> str:
        """The `error_description` Entra writes: code, message, then trace lines."""
        return (
            f"AADSTS{self.aadsts}: {self.message}\r\nTrace ID: {trace_id}\r\n"
            f"Correlation ID: {correlation_id}\r\nTimestamp: {timestamp}"
        )


def entra_timestamp(now: float) -> str:
    """Entra's timestamp format, e.g. `2025-01-31 12:00:00Z`."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def error_body(
    err: EntraError, *, now: float, issuer_base: str, correlation_id: str | None
) -> dict[str, object]:
    """The JSON body of a token endpoint error, with the fields Entra sends."""
    trace_id = str(uuid.uuid4())
    correlation = correlation_id or str(uuid.uuid4())
    timestamp = entra_timestamp(now)
    return {
        "error": err.error,
        "error_description": err.description(trace_id, correlation, timestamp),
        "error_codes": [err.aadsts],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation,
        "error_uri": f"{issuer_base}/error?code={err.aadsts}",
    }


def redirect_error_params(err: EntraError, *, now: float) -> list[tuple[str, str]]:
    """`error` and `error_description` as an authorize/adminconsent redirect carries them."""
    timestamp = entra_timestamp(now)
    params = [
        ("error", err.error),
        ("error_description", err.description(str(uuid.uuid4()), str(uuid.uuid4()), timestamp)),
    ]
    if err.aadsts == 65004:
        # Entra marks a user's Cancel with this subcode.
        params.insert(1, ("error_subcode", "cancel"))
    return params


def unknown_client(client_id: str, directory: str) -> EntraError:
    """AADSTS700016: the app is not registered, or has no service principal in this tenant."""
    return EntraError(
        700016,
        f"Application with identifier '{client_id}' was not found in the directory "
        f"'{directory}'. This can happen if the application has not been installed by the "
        "administrator of the tenant or consented to by any user in the tenant. You may have "
        "sent your authentication request to the wrong tenant.",
        error="unauthorized_client",
    )


def redirect_uri_mismatch(redirect_uri: str, client_id: str) -> EntraError:
    """AADSTS50011: the redirect URI is not registered for the app."""
    return EntraError(
        50011,
        f"The redirect URI '{redirect_uri}' specified in the request does not match the "
        f"redirect URIs configured for the application '{client_id}'. Make sure the redirect "
        "URI sent in the request matches one added to your application in the Azure portal.",
        error="invalid_request",
    )


def user_declined() -> EntraError:
    """AADSTS65004: the user pressed Cancel on the consent page."""
    return EntraError(
        65004,
        "User declined to consent to access the app.",
        error="access_denied",
        redirectable=True,
    )


def missing_parameter(name: str) -> EntraError:
    """AADSTS900144: a required parameter is absent."""
    return EntraError(900144, f"The request body must contain the following parameter: '{name}'.")


def tenant_not_found(tenant: str) -> EntraError:
    """AADSTS90002: the path names no known tenant."""
    return EntraError(
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and "
        "are signing into the correct cloud.",
        error="invalid_tenant",
    )
