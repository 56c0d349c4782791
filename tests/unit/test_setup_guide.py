"""docs/microsoft-setup.md is what broker.setup_guide writes from the catalog."""

from __future__ import annotations

from pathlib import Path

from broker.catalog import load_catalog
from broker.setup_guide import render

PAGE = Path(__file__).resolve().parents[2] / "docs" / "microsoft-setup.md"


def test_committed_setup_page_matches_the_catalog() -> None:
    assert PAGE.read_text("utf-8") == render(load_catalog()), (
        "docs/microsoft-setup.md is stale: python -m broker.setup_guide > docs/microsoft-setup.md"
    )


def test_every_app_and_permission_is_on_the_page() -> None:
    page = render(load_catalog())
    for spec in load_catalog().actions:
        assert f"## App `{spec.app}`" in page and f"`{spec.action_type}`" in page
        for scope in spec.scopes:
            assert f"`{scope}`" in page
