"""The admin's browser: the link, and Microsoft's return to us."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from connexion import request

from broker import flows
from handlers import pages
from handlers.context import current_runtime

Reply = tuple[str, int, dict[str, str]]


def launch_action(handle: str) -> Reply:
    """``launchAction``: start a flow and send the admin to Microsoft."""
    started = flows.launch(current_runtime(), handle)
    secure = "; Secure" if started.cookie_secure else ""
    headers = {
        **pages.redirect_headers(started.location),
        "Set-Cookie": (
            f"{started.cookie_name}={started.cookie_value}; Max-Age={started.cookie_max_age}; "
            f"Path={started.cookie_path}; HttpOnly; SameSite=Lax{secure}"
        ),
    }
    return "", 302, headers


def complete_callback() -> Reply:
    """``completeCallback``: Microsoft's redirect back, checked and turned into an outcome."""
    pairs = request.query_params.multi_items()
    done = flows.complete(current_runtime(), pairs, dict(request.cookies))
    secure = "; Secure" if done.cookie_secure else ""
    expire = (
        f"{done.cookie_name}=; Max-Age=0; Path={done.cookie_path}; HttpOnly; SameSite=Lax{secure}"
    )
    if done.delivery.mode == "form_post":
        body, headers = pages.form_post_page(done.delivery.location, done.delivery.form_fields)
        return body, 200, {**headers, "Set-Cookie": expire}
    return (
        "",
        303,
        {**pages.page_headers(), "Location": done.delivery.location, "Set-Cookie": expire},
    )


async def resume_form_post(body: dict[str, Any]) -> Reply:
    """``resumeFormPost``: a form_post is a cross-site POST without our Lax cookie.

    Answer with a 303 to our own GET step, where the browser sends the cookie.
    Every field goes on: the GET step judges them. (Connexion has already read
    the form: a repeated field arrives joined with commas, so it fails there.)
    """
    pairs = [(k, str(v)) for k, v in (body or {}).items() if isinstance(v, str | int)]
    path = flows.callback_path(current_runtime())
    return "", 303, pages.redirect_headers(f"{path}?{urlencode(pairs)}")
