"""One home for the action item's lifecycle: only ``broker/lifecycle.py`` writes its status."""

from __future__ import annotations

import re
from pathlib import Path

BROKER = Path(__file__).resolve().parents[2] / "broker"


def test_only_the_lifecycle_module_writes_action_item_status() -> None:
    """A status written from a second module is how outcomes came apart before."""
    writers = sorted(
        path.name
        for path in BROKER.glob("*.py")
        if re.search(r"(update|insert)\(action_items\)", path.read_text("utf-8"))
    )
    assert writers == ["lifecycle.py"]


def test_flows_orchestrate_without_sql_of_their_own() -> None:
    """The round trip reads as protocol steps; storage lives in the modules that own it."""
    source = (BROKER / "flows.py").read_text("utf-8")
    assert "sqlalchemy" not in source and "broker.db" not in source
