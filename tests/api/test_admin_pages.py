"""The broker's own pages: plain words, in the admin's language, and a readable root."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import errors
from handlers import i18n, pages


def every_error() -> list[errors.BrokerError]:
    return [cls("detail") for cls in errors.all_error_classes()]


@pytest.mark.parametrize("language", ["en", "de"])
def test_every_failure_page_says_what_happened_what_next_and_whether_to_retry(
    language: str,
) -> None:
    _ = i18n.translations(language).gettext
    for error in every_error():
        page = pages.error_page(error, language)
        assert f'lang="{language}"' in page
        for text in (error.message, error.next_step):
            assert _(text).replace("'", "&#x27;") in page, (error.code, language)
        retry = "Trying again can help." if error.retry_helps else "Trying again will not help."
        assert _(retry) in page
        assert f"<code>{error.code}</code>" in page
        assert "detail" not in page  # the internal detail is for logs, never echoed


def test_german_pages_are_in_german() -> None:
    page = pages.error_page(errors.LinkExpired("gone"), "de")
    assert "Dieser Link ist abgelaufen." in page
    assert "Ein erneuter Versuch hilft nicht." in page


def test_every_admin_text_has_a_german_and_english_translation() -> None:
    """Fails when an error code or page phrase lacks a translation (python -m handlers.i18n)."""
    wanted = set(i18n.message_ids())
    for language in i18n.LANGUAGES:
        catalog = i18n.read_catalog(language)
        present = {m.id: m.string for m in catalog if m.id}
        assert set(present) == wanted, (language, sorted(wanted ^ set(present))[:5])
        untranslated = [text for text, string in present.items() if not string]
        assert untranslated == [], (language, untranslated[:5])
        assert not any(m.fuzzy for m in catalog if m.id), language
        mo = i18n.LOCALE_DIR / language / "LC_MESSAGES" / "messages.mo"
        assert mo.read_bytes() == i18n.compiled(catalog), f"{language} .mo is stale"


def test_no_page_promises_something_to_click_that_is_not_there() -> None:
    for language in i18n.LANGUAGES:
        for error in every_error():
            page = pages.error_page(error, language)
            assert "click it again here" not in page
            if "<button" not in page and "<a " not in page:
                assert "here." not in page.split("<h2>")[0]  # no "click here" in the headline


@given(st.text(max_size=200))
def test_any_accept_language_header_picks_a_supported_language(header: str) -> None:
    assert i18n.negotiate(header) in i18n.LANGUAGES


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("de-DE,de;q=0.9,en;q=0.8", "de"),
        ("en-GB,de;q=0.5", "en"),
        ("fr-FR,de;q=0.7,en;q=0.3", "de"),
        ("fr", "en"),
        ("de;q=0,en;q=0.1", "en"),
        (None, "en"),
        ("*", "en"),
        ("DE-at", "de"),
    ],
)
def test_accept_language_is_honoured_by_weight(header: str | None, language: str) -> None:
    assert i18n.negotiate(header) == language


def test_bare_callback_page_explains_itself_without_an_api_code(client: object) -> None:
    """Opening /oauth/callback directly: its own wording and code, not INVALID_STATE_PARAMETER."""
    response = client.get("/oauth/callback", headers={"Accept-Language": "de"})  # type: ignore[attr-defined]
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "RETURN_PAGE_OPENED_DIRECTLY" in response.text
    assert "Invalid provider state" not in response.text
    assert "INVALID_STATE_PARAMETER" not in response.text
    assert "Auf diese Seite leitet Microsoft Sie" in response.text


def test_unknown_link_page_follows_the_browser_language(client: object) -> None:
    english = client.get("/actions/nope")  # type: ignore[attr-defined]
    german = client.get("/actions/nope", headers={"Accept-Language": "de-CH, en;q=0.5"})  # type: ignore[attr-defined]
    assert english.status_code == german.status_code == 404
    assert "This link is not valid." in english.text
    assert "Dieser Link ist ungültig." in german.text and 'lang="de"' in german.text


def test_root_is_a_readable_page_for_browsers_and_a_problem_for_api_clients(
    client: object,
) -> None:
    browser = client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})  # type: ignore[attr-defined]
    assert browser.status_code == 200
    assert browser.headers["content-type"].startswith("text/html")
    assert "Teams consent broker" in browser.text
    assert "default-src 'none'" in browser.headers["content-security-policy"]
    api = client.get("/", headers={"Accept": "application/json"})  # type: ignore[attr-defined]
    assert api.status_code == 404
    assert api.headers["content-type"].startswith("application/problem+json")
    assert api.json()["code"] == "NOT_FOUND"


def test_link_the_spec_refuses_is_a_link_not_found_page(client: object) -> None:
    """A handle longer than any link: the admin reads "this link is not valid", not an API code."""
    response = client.get("/actions/" + "x" * 300)  # type: ignore[attr-defined]
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "LINK_NOT_FOUND" in response.text and "INVALID_REQUEST" not in response.text
