"""The layout rules of DESIGN.md, checked on the source itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("framework", ["connexion", "starlette", "uvicorn", "gunicorn", "handlers"])
def test_broker_never_imports_a_web_framework(framework: str) -> None:
    offenders = [path for path, names in imported_modules("broker").items() if framework in names]
    assert offenders == []


@pytest.mark.parametrize("library", ["jwt", "msal", "sqlalchemy"])
def test_handlers_never_touch_tokens_or_the_database_directly(library: str) -> None:
    offenders = [path for path, names in imported_modules("handlers").items() if library in names]
    assert offenders == []


def test_broker_never_imports_the_emulator() -> None:
    offenders = [path for path, names in imported_modules("broker").items() if "emulator" in names]
    assert offenders == []


def test_the_design_cards_top_level_exists() -> None:
    for name in (
        "openapi.yaml",
        "pyproject.toml",
        "handlers",
        "broker",
        "tests",
        "contracts",
        "Dockerfile",
    ):
        assert (ROOT / name).exists(), name
