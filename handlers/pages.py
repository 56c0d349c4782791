"""HTML pages for the admin's browser: errors, and the form_post hand-off.

Everything echoed is escaped. Pages carry their own strict Content-Security-
Policy; the form_post page allows exactly its one inline script by hash and
may submit only to the provider's callback origin.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape
from urllib.parse import urlsplit

from broker import errors

_STYLE = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;background:#f3f2f1;"
    "color:#201f1e;margin:0;display:flex;min-height:100vh;align-items:center;"
    "justify-content:center}main{background:#fff;max-width:32rem;padding:2rem 2.5rem;"
    "box-shadow:0 2px 6px rgba(0,0,0,.15);border-radius:4px}h1{font-size:1.4rem;"
    "margin-top:0}code{background:#f3f2f1;padding:.1rem .3rem}"
    "button{font-size:1rem;padding:.5rem 1rem}"
)
_AUTOSUBMIT = "document.forms[0].submit();"
_AUTOSUBMIT_HASH = base64.b64encode(hashlib.sha256(_AUTOSUBMIT.encode()).digest()).decode()
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

_ADVICE: dict[str, str] = {
    "LINK_NOT_FOUND": "Check that you opened the whole link, or ask your provider for a new one.",
    "LINK_EXPIRED": "Ask your provider's portal for a new link.",
    "LINK_REVOKED": "Your provider withdrew this link. Ask its portal for a new one.",
    "LINK_USED": "This step is already done. Return to your provider's portal.",
    "STATE_EXPIRED": "Go back to your provider's portal and click the button again.",
    "STATE_REPLAYED": "This step is already done. Return to your provider's portal.",
    "SERVICE_UNAVAILABLE": "The service is briefly unavailable. Try again in a moment.",
    "RATE_LIMITED": "Too many attempts from here. Wait a minute, then try again.",
    "URI_TOO_LONG": "The address is too long. Return to your provider's portal and try again.",
    "BROWSER_BINDING_MISMATCH": (
        "Finish the sign-in in the browser where you clicked the link, or click it again here."
    ),
}


# Every answer carries these (the security-headers middleware adds any that are missing).
BASE_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Cache-Control": "no-store",
}
HSTS = "max-age=31536000; includeSubDomains"


def page_headers(script_hash: str | None = None, form_action: str | None = None) -> dict[str, str]:
    """Headers of every HTML page we serve."""
    script = f"'sha256-{script_hash}'" if script_hash else "'none'"
    form = form_action or "'none'"
    return {
        "Content-Type": "text/html",
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; script-src {script}; "
            f"form-action {form}; frame-ancestors 'none'; base-uri 'none'"
        ),
    }


def redirect_headers(location: str) -> dict[str, str]:
    """Headers of a redirect we answer with (no body, so no content type)."""
    headers = page_headers()
    del headers["Content-Type"]
    return {**headers, "Location": location}


def error_page(error: errors.BrokerError) -> str:
    """A readable page for an error in the admin's browser (no stack, no echo of input)."""
    advice = _ADVICE.get(error.code, "Return to your provider's portal and try again.")
    return _document(
        escape(error.title),
        f"<h1>{escape(error.title)}</h1><p>{escape(advice)}</p>"
        f"<p><small>Reference: <code>{escape(error.code)}</code></small></p>",
    )


def form_post_page(action: str, fields: dict[str, str]) -> tuple[str, dict[str, str]]:
    """A page that posts ``fields`` to ``action`` at once (a button if scripts are off)."""
    inputs = "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'
        for name, value in fields.items()
    )
    body = (
        f'<h1>Returning to your provider</h1><form method="post" action="{escape(action)}">'
        f'{inputs}<noscript><button type="submit">Continue</button></noscript></form>'
        f"<script>{_AUTOSUBMIT}</script>"
    )
    origin = urlsplit(action)
    headers = page_headers(_AUTOSUBMIT_HASH, f"{origin.scheme}://{origin.netloc}")
    return _document("Returning to your provider", body), headers


def _document(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{title}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )
