"""Languages of the admin's pages: English and German, picked from ``Accept-Language``.

Texts are gettext messages whose ids are the English texts: the admin messages
and next steps of :mod:`broker.errors`, and the page phrases listed in
:data:`PAGE_TEXTS`. Catalogs live in ``handlers/locale/<lang>/LC_MESSAGES/``;
both the ``.po`` source and the compiled ``.mo`` are committed and shipped
as package data. ``python -m handlers.i18n`` adds new ids to every catalog
(untranslated) and compiles them; a test fails while any text lacks a
translation or a ``.mo`` is older than its ``.po``.
"""

from __future__ import annotations

import gettext
import io
from functools import cache
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

from broker import errors

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"
LANGUAGES = ("en", "de")
DEFAULT_LANGUAGE = "en"

SERVICE_INTRO = (
    "This service connects your organisation's Microsoft 365 to your Teams service provider."
)
NOTHING_HERE = (
    "Admins arrive here through a link in their provider's portal. There is nothing to do on "
    "this page itself."
)
#: Every phrase of the admin's pages besides the error registry's texts.
PAGE_TEXTS = (
    "What to do next",
    "Trying again can help.",
    "Trying again will not help.",
    "Reference",
    "Back to %(name)s",
    "Back to your provider's portal",
    "Returning to your provider",
    "Continue",
    "Teams consent broker",
    SERVICE_INTRO,
    NOTHING_HERE,
    "Developers: the API is described at",
)


def message_ids() -> list[str]:
    """Every text the admin's pages can show, in a stable order."""
    ids: dict[str, None] = {}
    for cls in errors.all_error_classes():
        ids[cls.message] = None
        ids[cls.next_step] = None
    for text in PAGE_TEXTS:
        ids[text] = None
    return sorted(ids)


def negotiate(accept_language: str | None) -> str:
    """The language to answer in, from an ``Accept-Language`` header (RFC 9110 weights)."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                continue
        if tag and weight > 0:
            ranked.append((-weight, position, tag.strip()))
    for _weight, _position, tag in sorted(ranked):
        if tag == "*":
            return DEFAULT_LANGUAGE
        try:
            language = Locale.parse(tag, sep="-").language
        except (ValueError, UnknownLocaleError):
            continue
        if language in LANGUAGES:
            return language
    return DEFAULT_LANGUAGE


@cache
def translations(language: str) -> gettext.NullTranslations:
    """The compiled catalog of ``language`` (English ids when there is none)."""
    return gettext.translation(
        DOMAIN, localedir=str(LOCALE_DIR), languages=[language], fallback=True
    )


def _po_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def read_catalog(language: str) -> Catalog:
    """The ``.po`` catalog of ``language``."""
    with _po_path(language).open("rb") as source:
        return read_po(source, locale=language, domain=DOMAIN)


def compiled(catalog: Catalog) -> bytes:
    """The ``.mo`` bytes of ``catalog``."""
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    return buffer.getvalue()


def update_catalogs() -> None:
    """Add new message ids to each catalog, drop gone ones, and compile the ``.mo`` files."""
    wanted = message_ids()
    for language in LANGUAGES:
        path = _po_path(language)
        old = read_catalog(language) if path.exists() else Catalog(locale=language)
        # Keep the header's date: regenerating unchanged catalogs changes no byte.
        catalog = Catalog(
            locale=language,
            domain=DOMAIN,
            project="ctt-broker",
            creation_date=old.creation_date,
            revision_date=old.revision_date,
        )
        for text in wanted:
            found = old.get(text)
            if language == DEFAULT_LANGUAGE:
                catalog.add(text, text)
            else:
                catalog.add(text, found.string if found is not None else "")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as target:
            write_po(target, catalog, width=0, omit_header=False)
        path.with_suffix(".mo").write_bytes(compiled(catalog))


if __name__ == "__main__":
    update_catalogs()
