"""Gunicorn server hooks for ``ctt-broker serve`` (``--config python:handlers.gunicorn_hooks``).

The master, not a worker, serves the metrics: it outlives the workers and sums
what each wrote to ``PROMETHEUS_MULTIPROC_DIR``.
"""

from __future__ import annotations

from typing import Any

from broker import metrics
from broker.db import make_engine
from broker.settings import load_settings


def when_ready(server: Any) -> None:
    """Start the metrics server on ``CTT_METRICS_BIND`` once gunicorn listens."""
    settings = load_settings()
    if settings.metrics_bind:
        metrics.serve_metrics(settings.metrics_bind, make_engine(settings.database_url))


def child_exit(server: Any, worker: Any) -> None:
    """A worker died or was replaced: its live gauges leave the sum."""
    metrics.process_exited(worker.pid)
