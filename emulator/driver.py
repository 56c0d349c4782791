"""Drive the emulator's interactive pages over HTTP, like a user clicking through a browser.

For tests (here and in the broker's end-to-end suite): give it any httpx.Client that reaches the
emulator (e.g. a Starlette TestClient) and the authorize or adminconsent URL the app built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import parse_qsl, urljoin, urlsplit

import httpx

from emulator.pages import CONSENT_PATH, SELECT_PATH


class BrowserFlowError(Exception):
    """The emulator showed an error page instead of redirecting (e.g. AADSTS50011)."""

    def __init__(self, status: int, aadsts: str | None, page: str) -> None:
        super().__init__(f"emulator error page (HTTP {status}, AADSTS{aadsts})")
        self.status = status
        self.aadsts = aadsts
        self.page = page


@dataclass(frozen=True)
class AuthorizeResult:
    """Where the emulator finally sent the browser, and with which parameters."""

    redirect_uri: str
    params: dict[str, str]
    delivery: Literal["query", "fragment", "form_post"]


@dataclass
class _Form:
    action: str
    fields: dict[str, str]


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[_Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(_Form(action=attributes.get("action", ""), fields={}))
        elif tag == "input" and self.forms and attributes.get("type") == "hidden":
            self.forms[-1].fields[attributes.get("name", "")] = attributes.get("value", "")


def _forms(page: str) -> list[_Form]:
    parser = _FormParser()
    parser.feed(page)
    return parser.forms


def _result_from(response: httpx.Response) -> AuthorizeResult | None:
    if response.status_code in (301, 302, 303):
        location = response.headers["location"]
        parts = urlsplit(location)
        base = location.split("#", 1)[0].split("?", 1)[0]
        if parts.fragment:
            return AuthorizeResult(base, dict(parse_qsl(parts.fragment)), "fragment")
        return AuthorizeResult(base, dict(parse_qsl(parts.query)), "query")
    if response.status_code >= 400:
        match = re.search(r"AADSTS(\d+)", response.text)
        raise BrowserFlowError(
            response.status_code, match.group(1) if match else None, response.text
        )
    forms = _forms(response.text)
    if len(forms) == 1 and 'name="hiddenform"' in response.text:
        return AuthorizeResult(forms[0].action, forms[0].fields, "form_post")
    return None


def complete_browser_flow(
    client: httpx.Client,
    url: str,
    *,
    username: str | None = None,
    decision: Literal["accept", "cancel"] = "accept",
) -> AuthorizeResult:
    """Open `url`, pick `username` if asked, answer the consent page, return the final redirect.

    `username` may be omitted when the URL carries a matching `login_hint`.
    """
    response = client.get(url, follow_redirects=False)
    for _ in range(3):
        result = _result_from(response)
        if result is not None:
            return result
        forms = {f.action: f for f in _forms(response.text)}
        page_url = str(response.request.url)
        if SELECT_PATH in forms:
            if username is None:
                raise ValueError("the emulator shows the account picker: pass username")
            txn = forms[SELECT_PATH].fields["txn"]
            response = client.post(
                urljoin(page_url, SELECT_PATH),
                data={"txn": txn, "username": username},
                follow_redirects=False,
            )
        elif CONSENT_PATH in forms:
            txn = forms[CONSENT_PATH].fields["txn"]
            response = client.post(
                urljoin(page_url, CONSENT_PATH),
                data={"txn": txn, "decision": decision},
                follow_redirects=False,
            )
        else:
            break
    raise RuntimeError("unexpected emulator page")
