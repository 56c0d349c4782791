"""broker/errors.py is the one registry of error codes; spec and README are generated from it."""

from __future__ import annotations

from pathlib import Path

from broker import errors, errors_doc

REPO = Path(__file__).resolve().parents[2]


def test_committed_spec_and_readme_match_the_registry() -> None:
    """Fails when openapi.yaml or README.md was edited by hand or not regenerated."""
    assert errors_doc.stale_files(REPO) == [], "run: python -m broker.errors_doc"


def test_every_code_has_every_registry_field() -> None:
    codes: dict[str, type[errors.BrokerError]] = {}
    for cls in errors.all_error_classes():
        if cls is errors.InternalError:  # the base class's own code, raised by name
            continue
        assert codes.setdefault(cls.code, cls) is cls, f"{cls.code} is defined twice"
        assert 400 <= cls.status <= 599, cls.code
        assert cls.title.strip() == cls.title and cls.title, cls.code
        for text in (cls.message, cls.next_step, cls.guidance):
            assert text.strip() == text and text.endswith((".", ")")), (cls.code, text)
        assert isinstance(cls.retry_helps, bool)
    # Every subclass restates its own texts instead of inheriting a parent's by accident.
    for cls in errors.all_error_classes():
        if cls in (errors.BrokerError, errors.InternalError):
            continue
        own = vars(cls)
        for name in ("code", "title", "message", "next_step", "retry_helps", "guidance"):
            assert name in own, (cls.__name__, name)


def test_the_generated_tables_list_each_code_once_with_its_status() -> None:
    block = errors_doc.spec_block()
    table = errors_doc.readme_table()
    for cls in errors_doc.registry():
        assert block.count(f"| {cls.code} | {cls.status} |") == 1
        assert block.count(f"        - {cls.code}\n") == 1
        assert table.count(f"| `{cls.code}` | {cls.status} |") == 1


def test_a_hand_edited_table_is_detected(tmp_path: Path) -> None:
    for name in ("openapi.yaml", "README.md"):
        (tmp_path / name).write_text((REPO / name).read_text())
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text().replace("| `LINK_USED` | 409 |", "| `LINK_USED` | 410 |"))
    assert errors_doc.stale_files(tmp_path) == ["README.md"]
