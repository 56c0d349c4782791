"""HTML for the interactive pages. Every echoed value goes through `html.escape`.

The pages are plain forms so a test can drive them with HTTP posts (see `driver.py`):

* account picker: `POST /emulator-ui/select` with fields `txn` and `username`
  (the user's preferred_username);
* consent page: `POST /emulator-ui/consent` with fields `txn` and `decision`
  (`accept` or `cancel`).
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from emulator.config import EmulatorConfig
from emulator.core import ShowConsent, ShowPicker
from emulator.errors import EntraError

SELECT_PATH = "/emulator-ui/select"
CONSENT_PATH = "/emulator-ui/consent"

_CSS = """
body{margin:0;font-family:"Segoe UI",system-ui,-apple-system,sans-serif;background:#f2f2f2;
color:#1b1b1b}
main{max-width:440px;margin:48px auto;background:#fff;padding:36px 44px;
box-shadow:0 2px 6px rgba(0,0,0,.2)}
.brand{font-weight:600;color:#737373;letter-spacing:.02em;margin-bottom:16px}
.brand span{display:inline-block;width:10px;height:10px;margin-right:2px}
h1{font-size:24px;font-weight:600;margin:0 0 16px}
p,li{font-size:15px;line-height:1.45}
.tag{font-size:12px;color:#605e5c}
form.account{margin:0}
form.account button{display:block;width:100%;text-align:left;background:none;border:0;
border-bottom:1px solid #e1e1e1;padding:12px 4px;cursor:pointer;font:inherit}
form.account button:hover{background:#f3f2f1}
.name{font-weight:600}
.actions{display:flex;gap:8px;justify-content:flex-end;margin-top:24px}
.btn{font:inherit;padding:6px 20px;min-width:100px;border:1px solid #8a8886;background:#fff;
cursor:pointer}
.btn.primary{background:#0067b8;border-color:#0067b8;color:#fff}
input[type=text]{font:inherit;width:100%;box-sizing:border-box;padding:6px 0;border:0;
border-bottom:1px solid #666;margin:8px 0}
.error{color:#a80000}
code{font-size:13px;word-break:break-all}
footer{max-width:440px;margin:0 auto;font-size:12px;color:#605e5c}
"""

_LOGO = (
    '<span style="background:#f25022"></span><span style="background:#7fba00"></span>'
    '<span style="background:#00a4ef"></span><span style="background:#ffb900"></span>'
)


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body><main>"
        f'<div class="brand">{_LOGO} Microsoft (emulator)</div>{body}</main>'
        "<footer>Microsoft identity platform emulator. Not a Microsoft service.</footer>"
        "</body></html>"
    )


def picker_page(step: ShowPicker) -> str:
    """The account picker: one form per account, plus a free-text username form."""
    heading = "Pick an account" if step.kind == "authorize" else "Pick an admin account"
    forms = []
    for tenant, user in step.accounts:
        notes = []
        if user.is_global_admin:
            notes.append("Global Administrator")
        if user.declines_consent:
            notes.append("always declines consent")
        if tenant.personal:
            notes.append("personal account")
        note = f" · {escape(', '.join(notes))}" if notes else ""
        forms.append(
            f'<form class="account" method="post" action="{SELECT_PATH}">'
            f'<input type="hidden" name="txn" value="{escape(step.txn_id)}">'
            f'<input type="hidden" name="username" value="{escape(user.preferred_username)}">'
            f'<button type="submit"><span class="name">{escape(user.name)}</span><br>'
            f"{escape(user.preferred_username)}<br>"
            f'<span class="tag">{escape(tenant.display_name)}{note}</span></button></form>'
        )
    other = (
        f'<form method="post" action="{SELECT_PATH}"><p>Use another account</p>'
        f'<input type="hidden" name="txn" value="{escape(step.txn_id)}">'
        '<input type="text" name="username" placeholder="Email" autocomplete="off">'
        '<div class="actions"><button class="btn primary" type="submit">Next</button></div>'
        "</form>"
    )
    body = (
        f"<h1>{escape(heading)}</h1>"
        f"<p>to continue to <strong>{escape(step.app.display_name)}</strong></p>"
        + "".join(forms)
        + other
    )
    return _page(heading, body)


def consent_page(step: ShowConsent) -> str:
    """The consent prompt with Accept and Cancel buttons (field `decision`)."""
    items = "".join(f"<li>{escape(p)}</li>" for p in step.permissions) or "<li>No permissions</li>"
    org_note = (
        f"<p>Accepting grants these permissions for every user in "
        f"<strong>{escape(step.tenant.display_name)}</strong>.</p>"
        if step.kind == "adminconsent"
        else ""
    )
    body = (
        f"<p>{escape(step.user.preferred_username)}</p>"
        "<h1>Permissions requested</h1>"
        f"<p><strong>{escape(step.app.display_name)}</strong> "
        f'<span class="tag">(app id {escape(step.app.client_id)})</span></p>'
        f"<p>This app would like to:</p><ul>{items}</ul>{org_note}"
        f'<form method="post" action="{CONSENT_PATH}">'
        f'<input type="hidden" name="txn" value="{escape(step.txn_id)}">'
        '<div class="actions">'
        '<button class="btn" type="submit" name="decision" value="cancel">Cancel</button>'
        '<button class="btn primary" type="submit" name="decision" value="accept">Accept'
        "</button></div></form>"
    )
    return _page("Permissions requested", body)


def form_post_page(redirect_uri: str, params: Iterable[tuple[str, str]]) -> str:
    """response_mode=form_post: a form that submits itself to the redirect URI."""
    inputs = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in params
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Working...</title>'
        '</head><body onload="document.forms[0].submit()">'
        f'<form method="post" name="hiddenform" action="{escape(redirect_uri)}">{inputs}'
        "<noscript><p>Script is disabled. Click Submit to continue.</p>"
        '<input type="submit" value="Submit"></noscript></form></body></html>'
    )


def error_page(err: EntraError) -> str:
    """The page Entra shows when it must not redirect (bad client, bad redirect URI...)."""
    body = (
        "<h1>Sorry, but we're having trouble signing you in.</h1>"
        f'<p class="error"><code>AADSTS{err.aadsts}</code>: {escape(err.message)}</p>'
    )
    return _page(f"Sign in error AADSTS{err.aadsts}", body)


def index_page(config: EmulatorConfig) -> str:
    """A landing page listing tenants, users and apps, for humans exploring the sandbox."""
    tenants = "".join(
        f"<li><strong>{escape(t.display_name)}</strong> <code>{escape(t.tenant_id)}</code> "
        f"({escape(t.domain)})<ul>"
        + "".join(
            f"<li>{escape(u.name)} &lt;{escape(u.preferred_username)}&gt;"
            f"{' · Global Administrator' if u.is_global_admin else ''}"
            f"{' · always declines' if u.declines_consent else ''}</li>"
            for u in t.users
        )
        + "</ul></li>"
        for t in config.tenants
    )
    apps = "".join(
        f"<li>{escape(a.display_name)} <code>{escape(a.client_id)}</code></li>" for a in config.apps
    )
    body = (
        "<h1>Entra ID emulator</h1>"
        f"<p>Authority host: <code>{escape(config.issuer_base)}</code></p>"
        f"<h2>Tenants</h2><ul>{tenants}</ul><h2>App registrations</h2><ul>{apps}</ul>"
    )
    return _page("Entra ID emulator", body)
