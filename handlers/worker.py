"""The gunicorn worker class ``ctt-broker serve`` runs.

Uvicorn's h11 parser refuses request heads over 16 KiB with a bare text/plain
400 before the app sees them. Microsoft's callback carries a signed state, an
authorization code and possibly a long error description in the query, so the
limit is raised to 64 KiB, which covers every request the spec allows.
"""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker

MAX_REQUEST_HEAD_BYTES = 64 * 1024


class BrokerWorker(UvicornWorker):  # type: ignore[misc]
    """Uvicorn under gunicorn, with a request-head limit that fits the spec."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "h11_max_incomplete_event_size": MAX_REQUEST_HEAD_BYTES,
    }
