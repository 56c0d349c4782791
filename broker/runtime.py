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
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from broker.catalog import Catalog, load_catalog
from broker.db import make_engine
from broker.settings import Settings

if TYPE_CHECKING:
    from broker.credentials import Credentials
    from broker.microsoft import Microsoft

Clock = Callable[[], datetime]
RandomBytes = Callable[[int], bytes]


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
    credentials: Credentials | None = None
    microsoft: Microsoft | None = None

    def now(self) -> datetime:
        """The current time in UTC."""
        return self.clock().astimezone(UTC)

    @property
    def keys(self) -> Credentials:
        """The loaded credentials; only the admin flow needs them."""
        if self.credentials is None:
            raise RuntimeError("this runtime was built without credentials")
        return self.credentials

    @property
    def ms(self) -> Microsoft:
        """The Microsoft client; only the admin flow needs it."""
        if self.microsoft is None:
            raise RuntimeError("this runtime was built without a Microsoft client")
        return self.microsoft


def open_runtime(settings: Settings, *, with_microsoft: bool = True) -> Runtime:
    """Create the engine, load the catalog and, for the service, credentials and MSAL."""
    from broker.credentials import load_credentials
    from broker.microsoft import Microsoft, make_http_client

    catalog = load_catalog()
    engine = make_engine(settings.database_url)
    if not with_microsoft:
        return Runtime(settings=settings, engine=engine, catalog=catalog)
    credentials = load_credentials(settings, catalog, secrets.token_bytes)
    microsoft = Microsoft(settings, credentials, make_http_client(settings), system_clock)
    return Runtime(
        settings=settings,
        engine=engine,
        catalog=catalog,
        credentials=credentials,
        microsoft=microsoft,
    )
