"""What the domain needs from the outside world, passed in explicitly.

A :class:`Runtime` bundles settings, the database engine, the action catalog,
a clock and a source of random bytes. Production builds one with
:func:`open_runtime`; tests build their own with a fixed clock.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine

from broker.catalog import Catalog, load_catalog
from broker.db import make_engine
from broker.settings import Settings

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

    def now(self) -> datetime:
        """The current time, truncated to microseconds like the database."""
        return self.clock().astimezone(UTC)


def open_runtime(settings: Settings) -> Runtime:
    """Create the engine for ``settings`` and load the shipped catalog."""
    return Runtime(
        settings=settings, engine=make_engine(settings.database_url), catalog=load_catalog()
    )
