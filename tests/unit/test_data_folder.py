"""Where the data folder is, and that every CLI error names the database it looked at."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from broker import cli
from broker.settings import load_settings

CHECKOUT = Path(__file__).resolve().parents[2]


def test_unset_data_dir_is_the_checkouts_var_whatever_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ctt-broker provider list` from another folder must not open a new, empty ./var there."""
    monkeypatch.chdir(tmp_path)
    settings = load_settings({})
    assert settings.data_dir == CHECKOUT / "var"
    assert str(CHECKOUT / "var" / "ctt-broker.sqlite3") in settings.database_url


def test_ctt_data_dir_wins_over_the_rule(tmp_path: Path) -> None:
    assert load_settings({"CTT_DATA_DIR": str(tmp_path)}).data_dir == tmp_path.resolve()


@pytest.mark.parametrize(
    "argv", [["provider", "list"], ["provider", "revoke-key", "nobody", "key_1"]]
)
def test_every_cli_error_names_the_database(tmp_path: Path, argv: list[str]) -> None:
    env = {"CTT_DATA_DIR": str(tmp_path)}
    err = io.StringIO()
    code = cli.main(argv, env=env, out=io.StringIO(), err=err)
    assert code == cli.EXIT_SCHEMA  # a new folder: no schema yet
    assert str(tmp_path / "ctt-broker.sqlite3") in err.getvalue()
    assert cli.main(["db", "upgrade"], env=env, out=io.StringIO(), err=io.StringIO()) == 0
    if argv[1] == "revoke-key":
        err = io.StringIO()
        assert cli.main(argv, env=env, out=io.StringIO(), err=err) == cli.EXIT_REFUSED
        assert str(tmp_path / "ctt-broker.sqlite3") in err.getvalue()


def test_worker_help_mentions_webhooks() -> None:
    out = io.StringIO()
    cli.build_parser().print_help(out)
    (line,) = [text for text in out.getvalue().splitlines() if text.strip().startswith("worker")]
    assert "webhooks" in line
