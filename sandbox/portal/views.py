"""The demo portal's HTML: pages and sections built from broker answers, escaped throughout.

Tokens are only ever shown as short prefixes.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from html import escape
from typing import Any

from starlette.responses import HTMLResponse

from sandbox.portal.client import BrokerError, IssuedState

TOKEN_PREFIX_CHARS = 12


STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f4f6fa;
color:#1d2433}
header{background:#17365d;color:#fff;padding:14px 28px}header b{font-size:18px}
header span{opacity:.75;margin-left:10px}
main{max-width:920px;margin:24px auto;padding:0 20px}
section{background:#fff;border:1px solid #dde3ec;border-radius:8px;padding:16px 20px;
margin-bottom:18px}
h1{font-size:21px;margin:0 0 12px}h2{font-size:16px;margin:0 0 10px}
table{border-collapse:collapse;width:100%}td{overflow-wrap:anywhere}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #edf0f5;vertical-align:top}
th{font-weight:600;color:#4a5568;width:auto}
code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f1f3f7;padding:1px 4px;
border-radius:3px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:13px;background:#e2e8f0;
white-space:nowrap}
td code.name,td .when{white-space:nowrap}
details{margin-top:10px}summary{cursor:pointer;color:#1f5fa6}
.lead{font-size:16px;margin:0 0 10px}
.ok{background:#d5f5e3;color:#145a32}.bad{background:#fadbd8;color:#7b241c}
.wait{background:#fdebd0;color:#7e5109}
.warn{background:#fff4e5;border-color:#f5b041}.error{background:#fdedec;border-color:#e6b0aa}
.actions button{display:block;width:100%;text-align:left;margin:6px 0;padding:9px 12px;
border:1px solid #9fb3c8;border-radius:6px;background:#fff;font:inherit;cursor:pointer}
.actions button:hover:not([disabled]){background:#eaf2fb}
.actions button[disabled]{color:#8a94a6;cursor:not-allowed;background:#f7f8fa}
.actions small{color:#5a6578}
.note{color:#5a6578;font-size:13px}
a{color:#1f5fa6}
"""

GOOD = {"registered", "completed", "granted"}
BAD = {"failed", "notRegistered", "expired", "revoked"}
WAIT = {"pending", "opened", "notRequested", "created"}


def badge(value: Any) -> str:
    text = "—" if value is None else str(value)
    kind = "ok" if text in GOOD else "bad" if text in BAD else "wait" if text in WAIT else ""
    return f'<span class="badge {kind}">{escape(text)}</span>'


def code(value: Any) -> str:
    return "—" if value in (None, "") else f"<code>{escape(str(value))}</code>"


def name(value: Any) -> str:
    """A code-like name (an event type, an error code) that must not break mid-word."""
    return "—" if value in (None, "") else f'<code class="name">{escape(str(value))}</code>'


def when(value: Any) -> str:
    """A timestamp to the second, in UTC: the broker's are RFC 3339, MSAL's epoch seconds."""
    if value in (None, ""):
        return "—"
    try:
        if isinstance(value, int | float) or str(value).isdigit():
            moment = datetime.fromtimestamp(float(value), UTC)
        else:
            moment = datetime.fromisoformat(str(value).replace("z", "Z").replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return escape(str(value))
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f'<span class="when">{moment.strftime("%Y-%m-%d %H:%M:%S")} UTC</span>'


ACTION_TITLES = {
    "REGISTRATION": "Register your enterprise",
    "LOGIN_ENTERPRISE_ADMIN": "Sign in as your Global Admin",
    "GET_USER_SYNC_CONSENT": "Allow user sync",
    "GET_PRESENCE_CONSENT": "Allow Teams presence",
    "GET_CALL_APP_CONSENT": "Allow the calling app",
    "GET_CONTACTS_CONSENT": "Allow contact sync",
    "GET_CDR_CONSENT": "Allow call detail records",
    "GET_CALL_RECORDING_CONSENT": "Allow call recording",
    "GET_SERVICE_PROVIDER_CONSENT": "Allow voice routing management",
    "DEPLOY_TEAMS_APPS": "Deploy Teams apps",
}


def action_title(action_type: Any) -> str:
    """What a person calls an action; an unknown type (a newer broker) keeps its name."""
    text = str(action_type)
    return ACTION_TITLES.get(text) or text.replace("_", " ").capitalize()


def prefix(token: Any) -> str:
    """Only the first characters of a token: enough to recognise it, useless to an attacker."""
    if not isinstance(token, str) or not token:
        return "—"
    return f"<code>{escape(token[:TOKEN_PREFIX_CHARS])}…</code> ({len(token)} characters)"


def table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} · Northwind Telecom</title>"
        '<link rel="stylesheet" href="/static/portal.css"></head><body>'
        "<header><b>Northwind Telecom</b><span>Teams Phone customer portal (ctt-broker sandbox)"
        f"</span></header><main>{body}</main></body></html>"
    )
    return HTMLResponse(document, status_code=status_code, headers=SECURITY_HEADERS)


# The callback page's URL carries a resultCode: no referrer, no caching, no framing.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
}


def enterprise_section(enterprise: dict[str, Any]) -> str:
    registration = enterprise.get("registration") or {}
    overview = table(
        [
            ("Enterprise", escape(str(enterprise.get("name")))),
            ("Enterprise id", code(enterprise.get("enterpriseId"))),
            ("Your customer id", code(enterprise.get("externalId"))),
            ("Registration", badge(registration.get("status"))),
            ("Microsoft tenant", code(registration.get("tenantId"))),
            ("Registered at", when(registration.get("registeredAt"))),
        ]
    )
    consent_rows = "".join(
        "<tr>"
        f"<td>{escape(str(c.get('consentType')))}</td>"
        f"<td>{escape(action_title(c.get('actionType')))}</td>"
        f"<td>{'yes' if c.get('mandatory') else 'no'}</td>"
        f"<td>{badge(c.get('status'))}</td>"
        f"<td>{name(c.get('errorCode'))}</td>"
        f"<td>{when(c.get('grantedAt') or c.get('updatedAt'))}</td>"
        "</tr>"
        for c in enterprise.get("consents", [])
    )
    consents = (
        "<table><tr><th>Consent</th><th>Action</th><th>Mandatory</th><th>Status</th>"
        f"<th>Error</th><th>Updated</th></tr>{consent_rows}</table>"
    )
    return (
        f"<section><h2>Your enterprise</h2>{overview}</section>"
        f"<section><h2>Microsoft consents</h2>{consents}</section>"
    )


def teams_section(
    packages: list[dict[str, Any]], enterprise: dict[str, Any], registered: bool
) -> str:
    package_rows = "".join(
        f"<tr><td>{escape(str(p.get('name')))}</td><td>{code(p.get('manifestId'))}</td>"
        f"<td>{escape(str(p.get('version')))}</td><td>{'yes' if p.get('current') else 'no'}</td>"
        f"<td>{prefix(p.get('sha256'))}</td></tr>"
        for p in packages
    )
    catalog_rows = "".join(
        f"<tr><td>{code(a.get('manifestId'))}</td><td>{badge(a.get('status'))}</td>"
        f"<td>{escape(str(a.get('version') or '—'))}</td><td>{code(a.get('catalogAppId'))}</td>"
        f"<td>{name(a.get('errorCode'))}</td><td>{when(a.get('updatedAt'))}</td></tr>"
        for a in enterprise.get("teamsApps", [])
    )
    catalog = (
        "<table><tr><th>App (manifest id)</th><th>Last deployment</th><th>Version</th>"
        f"<th>Catalog app id</th><th>Error</th><th>At</th></tr>{catalog_rows}</table>"
        if catalog_rows
        else "<p>Not deployed to this tenant yet.</p>"
    )
    newest = max((str(p.get("version")) for p in packages), default="1.0.0", key=version_tuple)
    major, minor, _patch = version_tuple(newest)
    deploy = (
        '<button name="choice" value="DEPLOY_TEAMS_APPS"><b>Deploy Teams apps</b> <small>Sign in '
        "as a Global or Teams Administrator; the broker publishes or updates the apps "
        "below in the tenant's Teams app catalog.</small></button>"
        if registered
        else '<button name="choice" value="DEPLOY_TEAMS_APPS" disabled><b>Deploy Teams apps</b>'
        "<br><small>Needs a registered enterprise: register your enterprise first.</small></button>"
    )
    return (
        '<section class="actions"><h2>Teams apps</h2>'
        "<table><tr><th>App</th><th>Manifest id</th><th>Version</th><th>Current</th>"
        f"<th>SHA-256</th></tr>{package_rows}</table>"
        '<form method="post" action="/teams/bump">'
        f'<button name="version" value="{major}.{minor + 1}.0"><b>Upload version '
        f"{major}.{minor + 1}.0</b> <small>A new version of the demo app (the next deployment "
        "updates it).</small></button></form>"
        f'<form method="post" action="/start">{deploy}</form>'
        f"<h3>In the tenant's Teams app catalog</h3>{catalog}"
        '<p class="note">Demo users: <code>admin@contoso.onmicrosoft.com</code> (Global Admin), '
        "<code>tomas@contoso.onmicrosoft.com</code> (Teams Administrator), "
        "<code>user@contoso.onmicrosoft.com</code> (fails with NOT_TEAMS_ADMIN).</p></section>"
    )


def version_tuple(version: str) -> tuple[int, int, int]:
    core = version.split("-", 1)[0].split("+", 1)[0].split(".")
    try:
        return int(core[0]), int(core[1]), int(core[2])
    except (IndexError, ValueError):
        return 0, 0, 0


def actions_section(types: list[dict[str, Any]], registered: bool) -> str:
    buttons = []
    for spec in types:
        action_type = str(spec.get("actionType"))
        if action_type == "DEPLOY_TEAMS_APPS":
            continue  # its own section, with the packages and the catalog state
        label = (
            f"<b>{escape(action_title(action_type))}</b> "
            f"<small>{escape(str(spec.get('description')))}</small>"
        )
        if action_type == "REGISTRATION":
            if registered:
                buttons.append(
                    '<button name="choice" value="REGISTRATION" disabled>'
                    f"{label}<br><small>Already registered.</small></button>"
                    '<button name="choice" value="REGISTRATION+reregister">'
                    "<b>Register again</b> <small>Bind the enterprise again "
                    "(sends <code>reregister: true</code>).</small></button>"
                )
            else:
                buttons.append(f'<button name="choice" value="REGISTRATION">{label}</button>')
        elif not registered:
            buttons.append(
                f'<button name="choice" value="{escape(action_type)}" disabled>{label}<br>'
                "<small>Needs a registered enterprise: register your enterprise first.</small>"
                "</button>"
            )
        else:
            buttons.append(f'<button name="choice" value="{escape(action_type)}">{label}</button>')
    return (
        '<section class="actions"><h2>Connect Microsoft Teams</h2>'
        '<form method="post" action="/start">'
        '<p><label><input type="checkbox" name="resultDelivery" value="form_post"> '
        "Receive the result as a signed JWT posted to the portal (<code>form_post</code>) "
        "instead of a one-time <code>resultCode</code> to redeem</label></p>"
        f"{''.join(buttons)}</form>"
        '<p class="note">Each button asks the broker for a one-time link and sends your browser '
        "there. Demo users at the emulator's account picker: "
        "<code>admin@contoso.onmicrosoft.com</code> (Global Admin), "
        "<code>user@contoso.onmicrosoft.com</code> (not an admin), "
        "<code>decliner@contoso.onmicrosoft.com</code> (cancels), "
        "<code>admin@fabrikam.onmicrosoft.com</code> (another tenant).</p></section>"
    )


def error_section(title: str, message: str) -> str:
    return f'<section class="error"><h2>{escape(title)}</h2><p>{message}</p></section>'


def outcome_section(result: dict[str, Any], via: str) -> str:
    rows = [
        ("Status", badge(result.get("status"))),
        ("Action", escape(action_title(result.get("actionType")))),
        ("Action type", code(result.get("actionType"))),
        ("Action item", code(result.get("actionItemId"))),
        ("Error code", name(result.get("errorCode"))),
        ("What happened", escape(str(result.get("message") or "—"))),
        ("Microsoft tenant", code(result.get("tenantId"))),
        ("Verified via", escape(via)),
    ]
    if result.get("signedInTenantId"):
        rows.insert(6, ("Signed in with tenant", code(result.get("signedInTenantId"))))
    body = f"<section><h2>Outcome</h2>{table(rows)}</section>"
    auth = result.get("authenticationResult")
    if isinstance(auth, dict):
        body += sign_in_section(result, auth)
    teams = result.get("teamsApps")
    if isinstance(teams, dict):
        app_rows = "".join(
            f"<tr><td>{code(a.get('manifestId'))}</td><td>{badge(a.get('status'))}</td>"
            f"<td>{escape(str(a.get('version') or '—'))}</td>"
            f"<td>{code(a.get('catalogAppId'))}</td><td>{code(a.get('errorCode'))}</td>"
            f"<td>{code(a.get('graphErrorCode'))}</td></tr>"
            for a in teams.get("apps", [])
        )
        body += (
            "<section><h2>Teams apps deployed</h2><table><tr><th>App</th><th>Result</th>"
            "<th>Version</th><th>Catalog app id</th><th>Error</th><th>Graph error</th></tr>"
            f"{app_rows}</table></section>"
        )
    consent = result.get("consent")
    if isinstance(consent, dict):
        body += (
            "<section><h2>Consent</h2>"
            + table(
                [
                    ("Consent", escape(str(consent.get("consentType")))),
                    ("Status", badge(consent.get("status"))),
                    (
                        "Roles confirmed",
                        " ".join(code(r) for r in consent.get("roles", [])) or "—",
                    ),
                    (
                        "Roles required",
                        " ".join(code(r) for r in consent.get("requiredRoles", [])) or "—",
                    ),
                ]
            )
            + "</section>"
        )
    return body


def sign_in_section(result: dict[str, Any], auth: dict[str, Any]) -> str:
    """Who signed in and what the provider may now do; MSAL's raw result folded away."""
    account = auth.get("account") or {}
    scopes = [str(s) for s in auth.get("scopes") or []]
    person = str(account.get("name") or account.get("username") or "Someone")
    username = str(account.get("username") or "")
    tenant = auth.get("tenantId") or result.get("tenantId")
    who = (
        f'<p class="lead"><b>{escape(person)}</b>'
        + (f" ({escape(username)})" if username and username != person else "")
        + f" signed in for Microsoft tenant {code(tenant)}.</p>"
    )
    can: list[str] = []
    if result.get("actionType") == "REGISTRATION" and result.get("status") == "completed":
        can.append(
            "Your enterprise is bound to this tenant: Northwind can now ask your admin for "
            "the Microsoft consents below."
        )
    if auth.get("accessToken"):
        can.append(
            f"Call Microsoft on {escape(person)}'s behalf with "
            + (", ".join(code(s) for s in scopes) or "the granted permissions")
            + f" until {when(auth.get('expiresOn'))}."
        )
    can.append(
        "Renew that access without asking again (a refresh token was shared)."
        if auth.get("refreshToken")
        else "Nothing after that: no refresh token was shared, so a later task asks you to "
        "sign in again."
    )
    raw = table(
        [
            ("Account", escape(username or "—")),
            ("Name", escape(str(account.get("name") or "—"))),
            ("Object id", code(auth.get("uniqueId"))),
            ("Tenant", code(auth.get("tenantId"))),
            ("Scopes", " ".join(code(s) for s in scopes) or "—"),
            ("Expires", when(auth.get("expiresOn"))),
            ("Token type", escape(str(auth.get("tokenType") or "—"))),
            ("Access token", prefix(auth.get("accessToken"))),
            ("ID token", prefix(auth.get("idToken"))),
            (
                "Refresh token",
                prefix(auth.get("refreshToken"))
                if auth.get("refreshToken")
                else "not shared with this provider",
            ),
        ]
    )
    return (
        f"<section><h2>Signed in</h2>{who}<p>Northwind can now:</p><ul>"
        + "".join(f"<li>{line}</li>" for line in can)
        + "</ul><details><summary>The raw MSAL result</summary>"
        + raw
        + '<p class="note">Tokens are shown as prefixes only; a real portal keeps them '
        "server-side.</p></details></section>"
    )


def webhooks_section(received: Iterable[dict[str, Any]]) -> str:
    rows = []
    for item in list(received)[:15]:
        if not item.get("verified"):
            rows.append(
                f"<tr><td>{badge('rejected')}</td><td colspan=3>{escape(str(item.get('problem')))}"
                "</td></tr>"
            )
            continue
        data = item.get("data") or {}
        rows.append(
            f"<tr><td>{badge('verified')}</td><td>{name(item.get('type'))}</td>"
            f"<td>{escape(action_title(data.get('actionType')))}: {badge(data.get('status'))} "
            f"{name(data.get('errorCode')) if data.get('errorCode') else ''}</td>"
            f"<td>{when(item.get('timestamp'))}</td></tr>"
        )
    listing = (
        "<table><tr><th>signature</th><th>event</th><th>outcome</th><th>at</th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else "<p>None yet. The broker's worker delivers them a few seconds after each outcome.</p>"
    )
    return (
        "<section><h2>Webhooks received</h2><p>Signed to the Standard Webhooks scheme and "
        "verified with the portal's secret; retries are recognised by their id.</p>"
        f"{listing}</section>"
    )


def state_check(issued: IssuedState | None, action_type: str | None) -> str:
    if issued is None:
        return (
            '<section class="warn"><h2>Warning: unexpected state</h2><p>This return carries a '
            "<code>state</code> this portal did not issue, or one already used. A real portal "
            "must not act on it (it may be a forged or replayed callback); the sandbox shows "
            "the broker-verified outcome anyway.</p></section>"
        )
    if action_type and action_type != issued.action_type:
        return (
            '<section class="warn"><h2>Warning: action type mismatch</h2><p>The portal sent '
            f"this browser for {code(issued.action_type)} but the return names "
            f"{code(action_type)}.</p></section>"
        )
    return ""


def binding_check(result: dict[str, Any], returned_state: str | None, callback_url: str) -> str:
    """The result's own ``state`` and ``callbackUrl`` against this session's.

    A customer can replay their own return URL with another customer's result:
    the state on the URL is theirs, the result is not. The broker puts the state
    and callback it was given into the result so that the portal can tell.
    """
    state_ok = returned_state is not None and secrets.compare_digest(
        str(result.get("state") or ""), returned_state
    )
    callback_ok = result.get("callbackUrl") == callback_url
    rows = [
        ("Result state", code(result.get("state"))),
        ("This session's state", code(returned_state)),
        ("State matches", "yes" if state_ok else "<strong>NO</strong>"),
        ("Result callback URL", code(result.get("callbackUrl"))),
        ("Callback URL matches", "yes" if callback_ok else "<strong>NO</strong>"),
    ]
    checks = table(rows)
    if state_ok and callback_ok:
        return f'<section class="binding"><h2>Result bound to this session</h2>{checks}</section>'
    return (
        '<section class="error"><h2>Result belongs to another session</h2><p>The result\'s '
        "<code>state</code> or <code>callbackUrl</code> differs from what this browser's "
        "session sent: a real portal must refuse it (a replayed or swapped result).</p>"
        f"{checks}</section>"
    )


def broker_error(exc: BrokerError) -> str:
    return error_section(
        "The broker refused",
        f"HTTP {exc.status} {code(exc.code)}: {escape(exc.detail)}",
    )


def back() -> str:
    return '<p><a href="/">← Back to your enterprise</a></p>'
