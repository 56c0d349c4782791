"""HTML pages for the admin's browser: errors, and the form_post hand-off.

Everything echoed is escaped. Pages carry their own strict Content-Security-
Policy; the form_post page allows exactly its one inline script by hash and
may submit only to the provider's callback origin.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from html import escape
from urllib.parse import urlsplit

from broker import errors
from broker.providers import Branding
from handlers import i18n

_STYLE = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;background:#f3f2f1;"
    "color:#201f1e;margin:0;display:flex;min-height:100vh;align-items:center;"
    "justify-content:center}main{background:#fff;max-width:32rem;padding:2rem 2.5rem;"
    "box-shadow:0 2px 6px rgba(0,0,0,.15);border-radius:4px}h1{font-size:1.4rem;"
    "margin-top:0}h2{font-size:1rem;margin-bottom:.25rem}.retry{color:#605e5c}"
    "code{background:#f3f2f1;padding:.1rem .3rem}"
    "button{font-size:1rem;padding:.5rem 1rem}.provider{color:#605e5c;margin:.25rem 0 1rem}"
    "a.back{font-weight:600}"
)
_AUTOSUBMIT = "document.forms[0].submit();"
_AUTOSUBMIT_HASH = base64.b64encode(hashlib.sha256(_AUTOSUBMIT.encode()).digest()).decode()
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

# Every answer carries these (the security-headers middleware adds any that are missing).
BASE_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Cache-Control": "no-store",
}
HSTS = "max-age=31536000; includeSubDomains"


def page_headers(
    script_hash: str | None = None, form_action: str | None = None, image: str | None = None
) -> dict[str, str]:
    """Headers of every HTML page we serve (``image``: the one image URL it may load)."""
    script = f"'sha256-{script_hash}'" if script_hash else "'none'"
    form = form_action or "'none'"
    images = f"; img-src {_csp_source(image)}" if image else ""
    return {
        "Content-Type": "text/html",
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; script-src {script}; "
            f"form-action {form}; frame-ancestors 'none'; base-uri 'none'{images}"
        ),
    }


def _csp_source(url: str) -> str:
    """A CSP source for exactly ``url`` (checked https, so it holds no quote, space or ';')."""
    return url.split("?", 1)[0]


def redirect_headers(location: str) -> dict[str, str]:
    """Headers of a redirect we answer with (no body, so no content type)."""
    headers = page_headers()
    del headers["Content-Type"]
    return {**headers, "Location": location}


def error_page(
    error: errors.BrokerError,
    language: str = i18n.DEFAULT_LANGUAGE,
    branding: Branding | None = None,
) -> str:
    """A readable page for an error in the admin's browser (no stack, no echo of input).

    It says what happened and what to do next in plain words, whether trying
    again can help, and the stable code as a reference for support. When the
    link's provider is known and has set its branding, the page carries its
    logo and name and a link back to its portal.
    """
    _ = i18n.translations(language).gettext
    header, back = _branding_parts(branding, _)
    message = _(error.message)
    retry = _("Trying again can help.") if error.retry_helps else _("Trying again will not help.")
    return _document(
        escape(message),
        f"<h1>{escape(message)}</h1>"
        f"<h2>{escape(_('What to do next'))}</h2><p>{escape(_(error.next_step))}</p>"
        f'<p class="retry">{escape(retry)}</p>'
        f"{back}"
        f"<p><small>{escape(_('Reference'))}: <code>{escape(error.code)}</code></small></p>",
        language,
        header,
    )


def _branding_parts(branding: Branding | None, _: Callable[[str], str]) -> tuple[str, str]:
    """The provider's logo and name above the page, and the link back to its portal."""
    if branding is None:
        return "", ""
    name = branding.display_name
    header = ""
    if branding.logo_url:
        alt = escape(name or "")
        header = f'<img class="logo" src="{escape(branding.logo_url)}" alt="{alt}" height="40">'
    if name:
        header += f'<p class="provider">{escape(name)}</p>'
    back = ""
    if branding.portal_url:
        label = (
            _("Back to %(name)s") % {"name": name} if name else _("Back to your provider's portal")
        )
        back = f'<p><a class="back" href="{escape(branding.portal_url)}">{escape(label)}</a></p>'
    return header, back


def home_page(language: str = i18n.DEFAULT_LANGUAGE) -> str:
    """The broker's root, for a browser: what this service is, and that nothing happens here."""
    _ = i18n.translations(language).gettext
    title = _("Teams consent broker")
    return _document(
        escape(title),
        f"<h1>{escape(title)}</h1>"
        f"<p>{escape(_(i18n.SERVICE_INTRO))}</p><p>{escape(_(i18n.NOTHING_HERE))}</p>"
        f"<p><small>{escape(_('Developers: the API is described at'))} "
        "<code>/openapi.json</code>.</small></p>",
        language,
    )


def form_post_page(
    action: str, fields: dict[str, str], language: str = i18n.DEFAULT_LANGUAGE
) -> tuple[str, dict[str, str]]:
    """A page that posts ``fields`` to ``action`` at once (a button if scripts are off)."""
    _ = i18n.translations(language).gettext
    inputs = "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'
        for name, value in fields.items()
    )
    body = (
        f"<h1>{escape(_('Returning to your provider'))}</h1>"
        f'<form method="post" action="{escape(action)}">'
        f'{inputs}<noscript><button type="submit">{escape(_("Continue"))}</button></noscript>'
        f"</form><script>{_AUTOSUBMIT}</script>"
    )
    origin = urlsplit(action)
    headers = page_headers(_AUTOSUBMIT_HASH, f"{origin.scheme}://{origin.netloc}")
    return _document(escape(_("Returning to your provider")), body, language), headers


def _document(
    title: str, body: str, language: str = i18n.DEFAULT_LANGUAGE, header: str = ""
) -> str:
    return (
        f'<!doctype html><html lang="{language}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{title}</title><style>{_STYLE}</style></head>"
        f"<body><main>{header}{body}</main></body></html>"
    )
