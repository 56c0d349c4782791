"""What the domain needs from the outside world, passed in explicitly.

A :class:`Runtime` bundles settings, the database engine, the action catalog,
a clock, a source of random bytes and, for the admin flow, the credentials and
the Microsoft client. Production builds one with :func:`open_runtime`; tests
build their own with a fixed clock and the emulator.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NoReturn, cast

from sqlalchemy import Engine

from broker.catalog import Catalog, load_catalog
from broker.db import make_engine
from broker.settings import Settings
from broker.tokens import RandomBytes

if TYPE_CHECKING:
    from broker.credentials import Credentials
    from broker.microsoft import Microsoft

Clock = Callable[[], datetime]


class _NotLoaded:
    """Stands in for a part only the admin flow loads; any use says which part is missing."""

    def __init__(self, what: str) -> None:
        self._what = what

    def __getattr__(self, name: str) -> NoReturn:
        raise RuntimeError(f"this runtime was built without {self._what}")

    def __repr__(self) -> str:
        return f"<no {self._what}>"


_NO_CREDENTIALS = cast("Credentials", _NotLoaded("credentials"))
_NO_MICROSOFT = cast("Microsoft", _NotLoaded("a Microsoft client"))


def system_clock() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Runtime:
    """Everything a domain function may touch besides its arguments."""

    settings: Settings
    engine: Engine
    catalog: Catalog
    clock: Clock = system_clock
    random_bytes: RandomBytes = secrets.token_bytes
    # The CLI and the worker never sign anyone in, so they run without these.
    credentials: Credentials = _NO_CREDENTIALS
    microsoft: Microsoft = _NO_MICROSOFT

    def now(self) -> datetime:
        """The current time in UTC."""
        return self.clock().astimezone(UTC)


def open_runtime(settings: Settings, *, with_microsoft: bool = True) -> Runtime:
    """Create the engine, load the catalog and, for the service, credentials and MSAL."""
    catalog = load_catalog()
    engine = make_engine(settings.database_url, pool_size=settings.database_pool_size)
    if not with_microsoft:
        return Runtime(settings=settings, engine=engine, catalog=catalog)
    # Imported only here: MSAL and its HTTP stack are about 0.1 s of CPU that the console
    # commands and `ctt-broker serve`'s own checks (before gunicorn starts) never use.
    from broker.credentials import load_credentials
    from broker.microsoft import Microsoft, make_http_client

    credentials = load_credentials(settings, catalog, secrets.token_bytes)
    microsoft = Microsoft(settings, credentials, make_http_client(settings), system_clock)
    return Runtime(
        settings=settings,
        engine=engine,
        catalog=catalog,
        credentials=credentials,
        microsoft=microsoft,
    )
