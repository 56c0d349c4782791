"""The ``ctt-broker`` console command on both databases."""

from __future__ import annotations

import io
import json
from pathlib import Path

from broker.cli import EXIT_REFUSED, EXIT_SCHEMA, EXIT_SETTINGS, EXIT_USAGE, main
from tests.conftest import Database


def run(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(args, env, out, err)
    return code, out.getvalue(), err.getvalue()


def env_for(database: Database, tmp_path: Path) -> dict[str, str]:
    return {"CTT_DATABASE_URL": database.url, "CTT_DATA_DIR": str(tmp_path)}


def test_provider_lifecycle_from_the_console(
    database: Database, tmp_path: Path, runtime: object
) -> None:
    env = env_for(database, tmp_path)
    code, out, _ = run(
        [
            "provider",
            "create",
            "Acme Telecom",
            "--callback",
            "https://portal.acme.example/cb",
            "--share-refresh-token",
            "--json",
        ],
        env,
    )
    assert code == 0
    created = json.loads(out)
    assert created["apiKey"].startswith("ctt_sk_")

    code, out, _ = run(["provider", "rotate-key", "Acme Telecom", "--overlap", "0", "--json"], env)
    assert code == 0
    rotated = json.loads(out)
    assert rotated["apiKey"] != created["apiKey"]

    assert (
        run(
            ["provider", "add-callback", created["providerId"], "https://portal.acme.example/cb2"],
            env,
        )[0]
        == 0
    )
    assert (
        run(["provider", "remove-callback", "Acme Telecom", "https://portal.acme.example/cb"], env)[
            0
        ]
        == 0
    )
    assert run(["provider", "revoke-key", "Acme Telecom", rotated["keyId"]], env)[0] == 0

    code, out, _ = run(["provider", "list"], env)
    listing = json.loads(out)
    assert code == 0
    assert listing[0]["callbackUrls"] == ["https://portal.acme.example/cb2"]
    assert listing[0]["shareRefreshToken"] is True
    assert [k["active"] for k in listing[0]["keys"]] == [False, False]
    assert created["apiKey"] not in out and rotated["apiKey"] not in out


def test_refusals_exit_1_with_the_error_code(
    database: Database, tmp_path: Path, runtime: object
) -> None:
    env = env_for(database, tmp_path)
    code, _, err = run(["provider", "create", "Dev", "--callback", "http://portal.example/cb"], env)
    assert code == EXIT_REFUSED
    assert "CALLBACK_URL_INSECURE_HTTP" in err
    code, _, err = run(["provider", "rotate-key", "Nobody"], env)
    assert code == EXIT_REFUSED
    assert "PROVIDER_NOT_FOUND" in err


def test_bad_arguments_exit_2(database: Database, tmp_path: Path) -> None:
    env = env_for(database, tmp_path)
    assert run(["provider", "explode"], env)[0] == EXIT_USAGE
    assert run(["provider", "rotate-key", "Acme", "--overlap", "soon"], env)[0] == EXIT_USAGE
    assert run([], env)[0] == EXIT_USAGE


def test_invalid_settings_exit_3_listing_every_problem(tmp_path: Path) -> None:
    code, _, err = run(["provider", "list"], {"CTT_WORKERS": "0", "CTT_MODE": "x"})
    assert code == EXIT_SETTINGS
    assert "CTT_WORKERS" in err and "CTT_MODE" in err


def test_unmigrated_database_exits_4_until_upgraded(tmp_path: Path) -> None:
    env = {"CTT_DATA_DIR": str(tmp_path)}
    assert run(["provider", "list"], env)[0] == EXIT_SCHEMA
    assert run(["db", "status"], env)[0] == EXIT_SCHEMA
    code, out, _ = run(["db", "upgrade"], env)
    assert code == 0 and "is current" in out
    assert run(["db", "status"], env)[0] == 0
    assert run(["provider", "list"], env) == (0, "[]\n", "")


def test_sandbox_provider_is_created_once_and_its_key_reused(tmp_path: Path) -> None:
    env = {"CTT_DATA_DIR": str(tmp_path)}
    code, first, _ = run(["sandbox-provider"], env)
    assert code == 0 and "ctt_sk_" in first
    code, second, _ = run(["sandbox-provider"], env)
    assert code == 0 and second == first
    assert oct((tmp_path / "sandbox-provider.json").stat().st_mode & 0o777) == "0o600"


def test_sandbox_provider_is_refused_in_production(tmp_path: Path) -> None:
    env = {
        "CTT_DATA_DIR": str(tmp_path),
        "CTT_MODE": "production",
        "CTT_PUBLIC_BASE_URL": "https://broker.example",
        "CTT_APP_CREDENTIALS": "{}",
        "CTT_STATE_KEYS": "k1:" + "A" * 43,
        "CTT_EVENT_KEYS": "e1:" + "B" * 43,
        "CTT_RESULT_SIGNING_KEY_FILE": "/nonexistent.pem",
    }
    run(["db", "upgrade"], env)
    code, _, err = run(["sandbox-provider"], env)
    assert code == EXIT_REFUSED and "sandbox mode" in err


def test_webhook_url_and_secret_from_the_console(
    database: Database, tmp_path: Path, runtime: object
) -> None:
    env = env_for(database, tmp_path)
    assert (
        run(["provider", "create", "Hooked", "--callback", "https://portal.example.com/cb"], env)[0]
        == 0
    )
    code, out, _ = run(
        ["provider", "set-webhook", "Hooked", "https://hooks.example.com/in", "--include-tokens"],
        env,
    )
    assert code == 0 and "webhook secret whsec_" in out
    code, out, _ = run(["provider", "set-webhook", "Hooked", "https://hooks.example.com/in2"], env)
    assert code == 0 and "whsec_" not in out  # the secret is shown once
    code, out, _ = run(["provider", "rotate-webhook-secret", "Hooked", "--overlap", "60"], env)
    assert code == 0 and "whsec_" in out
    assert run(["provider", "set-webhook", "Hooked"], env)[0] == EXIT_REFUSED
    code, _, err = run(
        ["provider", "set-webhook", "Hooked", "https://u:p@hooks.example.com/in"], env
    )
    assert code == EXIT_REFUSED and "CALLBACK_URL_USERINFO" in err
    assert run(["provider", "set-webhook", "Hooked", "--clear"], env)[0] == 0
    listing = json.loads(run(["provider", "list"], env)[1])
    assert listing[0]["webhookUrl"] is None
