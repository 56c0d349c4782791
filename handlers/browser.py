"""The admin's browser: the link, and Microsoft's return to us."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlencode

from anyio import to_thread
from connexion import context, request

from broker import flows
from handlers import pages
from handlers.context import MICROSOFT_LIMITER_KEY, OVERFLOW_KEY, current_runtime

Reply = tuple[str, int, dict[str, str]]


async def on_microsoft_threads(handler: Callable[..., Reply], *args: Any) -> Reply:
    """Run an admin handler that may wait on Microsoft on the Microsoft bulkhead.

    Its threads come from a limiter of their own (``CTT_MICROSOFT_CONCURRENCY``),
    so requests stuck on Microsoft's back channel never hold the threads the
    provider API runs on.
    """
    limiter = context.scope[MICROSOFT_LIMITER_KEY]
    return await to_thread.run_sync(partial(handler, *args), limiter=limiter)


async def launch_action(handle: str) -> Reply:
    """``launchAction``: start a flow and send the admin to Microsoft."""
    return await on_microsoft_threads(_launch_action, handle)


def _launch_action(handle: str) -> Reply:
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


async def complete_callback() -> Reply:
    """``completeCallback``: Microsoft's redirect back, checked and turned into an outcome."""
    return await on_microsoft_threads(_complete_callback)


def _complete_callback() -> Reply:
    pairs = request.query_params.multi_items()
    overflow = request.scope.get(OVERFLOW_KEY)
    done = flows.complete(current_runtime(), pairs, dict(request.cookies), overflow=overflow)
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
    return await on_microsoft_threads(_resume_form_post, body)


def _resume_form_post(body: dict[str, Any]) -> Reply:
    pairs = [(k, str(v)) for k, v in (body or {}).items() if isinstance(v, str | int)]
    path = flows.callback_path(current_runtime())
    return "", 303, pages.redirect_headers(f"{path}?{urlencode(pairs)}")
