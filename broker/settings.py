"""Settings: one frozen object, built once from an environment mapping.

Every variable starts with ``CTT_``. ``load_settings`` checks them all and
reports every problem in one :class:`SettingsError`, so an operator fixes a
bad deployment in one pass. Secrets never appear in ``repr``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

PREFIX = "CTT_"
MODES = ("sandbox", "production")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

T = TypeVar("T")


class SettingsError(ValueError):
    """Raised at start-up with every invalid or missing setting at once."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid settings:\n  - " + "\n  - ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    """Validated configuration of one broker instance."""

    mode: str
    public_base_url: str
    database_url: str = field(repr=False)
    data_dir: Path
    bind: str
    workers: int
    max_body_bytes: int
    key_rotation_overlap_seconds: int
    log_level: str

    @property
    def database_url_redacted(self) -> str:
        """The database URL with any password replaced, safe to print."""
        return redact_url(self.database_url)

    def __repr__(self) -> str:
        return (
            f"Settings(mode={self.mode!r}, public_base_url={self.public_base_url!r}, "
            f"database_url={self.database_url_redacted!r}, data_dir={str(self.data_dir)!r}, "
            f"bind={self.bind!r}, workers={self.workers}, max_body_bytes={self.max_body_bytes}, "
            f"key_rotation_overlap_seconds={self.key_rotation_overlap_seconds}, "
            f"log_level={self.log_level!r})"
        )


# name (without prefix), default, meaning: the README's table is checked against this.
DOCUMENTED: dict[str, tuple[str, str]] = {
    "MODE": ("sandbox", "`sandbox` (no Microsoft tenant needed) or `production`."),
    "PUBLIC_BASE_URL": (
        "http://127.0.0.1:8080",
        "Base URL admins reach the broker on; action item URLs start with it. "
        "Must be https in production.",
    ),
    "DATA_DIR": ("./var", "Folder for the default SQLite database and other local files."),
    "DATABASE_URL": (
        "sqlite:///{DATA_DIR}/ctt-broker.sqlite3",
        "SQLAlchemy URL. `postgresql+psycopg://...` for production and several instances.",
    ),
    "BIND": ("127.0.0.1:8080", "Address `ctt-broker serve` listens on."),
    "WORKERS": ("2", "Gunicorn worker processes for `ctt-broker serve` (1-64)."),
    "MAX_BODY_BYTES": ("65536", "Largest accepted request body; larger gets 413."),
    "KEY_ROTATION_OVERLAP_SECONDS": (
        "86400",
        "Default time an API key stays valid after `provider rotate-key` (0-2592000).",
    ),
    "LOG_LEVEL": ("INFO", "DEBUG, INFO, WARNING or ERROR."),
}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``env`` (``os.environ`` when None).

    Raises :class:`SettingsError` listing every problem found.
    """
    source = os.environ if env is None else env
    problems: list[str] = []

    def raw(name: str) -> str:
        value = source.get(PREFIX + name)
        return DOCUMENTED[name][0] if value is None or value == "" else value

    def parse(name: str, convert: Callable[[str], T], fallback: T) -> T:
        try:
            return convert(raw(name))
        except ValueError as exc:
            problems.append(f"{PREFIX}{name}: {exc}")
            return fallback

    unknown = sorted(
        key for key in source if key.startswith(PREFIX) and key[len(PREFIX) :] not in DOCUMENTED
    )
    problems.extend(f"{key}: unknown setting (typo?)" for key in unknown)

    mode = parse("MODE", _choice(MODES), "sandbox")
    public_base_url = parse("PUBLIC_BASE_URL", _base_url, "http://127.0.0.1:8080")
    if mode == "production" and public_base_url.startswith("http://"):
        problems.append(f"{PREFIX}PUBLIC_BASE_URL: must be https in production mode")
    data_dir = Path(raw("DATA_DIR")).expanduser().resolve()
    database_url = parse("DATABASE_URL", _database_url, "")
    database_url = database_url.replace("{DATA_DIR}", str(data_dir))
    bind = parse("BIND", _bind, "127.0.0.1:8080")
    workers = parse("WORKERS", _int_between(1, 64), 2)
    max_body_bytes = parse("MAX_BODY_BYTES", _int_between(1024, 10 * 1024 * 1024), 65536)
    overlap = parse("KEY_ROTATION_OVERLAP_SECONDS", _int_between(0, 30 * 86400), 86400)
    log_level = parse("LOG_LEVEL", _choice(LOG_LEVELS), "INFO")

    if problems:
        raise SettingsError(problems)
    return Settings(
        mode=mode,
        public_base_url=public_base_url,
        database_url=database_url,
        data_dir=data_dir,
        bind=bind,
        workers=workers,
        max_body_bytes=max_body_bytes,
        key_rotation_overlap_seconds=overlap,
        log_level=log_level,
    )


def redact_url(url: str) -> str:
    """Replace the password of a URL with ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[1]}"))


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def convert(value: str) -> str:
        if value not in options:
            raise ValueError(f"{value!r} is not one of {', '.join(options)}")
        return value

    return convert


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def convert(value: str) -> int:
        try:
            number = int(value, 10)
        except ValueError:
            raise ValueError(f"{value!r} is not an integer") from None
        if not low <= number <= high:
            raise ValueError(f"{number} is not between {low} and {high}")
        return number

    return convert


def _base_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an absolute http(s) URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{value!r} must not carry a query, fragment or credentials")
    return value.rstrip("/")


def _database_url(value: str) -> str:
    if not value.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
        raise ValueError("only sqlite:// and postgresql+psycopg:// URLs are supported")
    if value.startswith("postgresql://"):
        # psycopg 3 is the driver we install; SQLAlchemy's default would be psycopg2.
        value = "postgresql+psycopg://" + value[len("postgresql://") :]
    return value


def _bind(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return value
