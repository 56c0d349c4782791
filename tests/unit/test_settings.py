"""Settings: validated once, every problem reported together, secrets never printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.settings import DOCUMENTED, SettingsError, load_settings


def test_defaults_give_a_sandbox_on_sqlite() -> None:
    settings = load_settings({})
    assert settings.mode == "sandbox"
    assert settings.data_dir == Path.cwd() / "var"
    assert settings.database_url == f"sqlite:///{Path.cwd()}/var/ctt-broker.sqlite3"
    assert settings.public_base_url == "http://127.0.0.1:8080"
    assert settings.max_body_bytes == 65536


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(
            {
                "CTT_MODE": "chaos",
                "CTT_WORKERS": "many",
                "CTT_PUBLIC_BASE_URL": "ftp://x",
                "CTT_DATABASE_URL": "mysql://db",
                "CTT_BIND": "nope",
                "CTT_MAX_BODY_BYTES": "1",
                "CTT_LOG_LEVL": "DEBUG",
            }
        )
    problems = "\n".join(caught.value.problems)
    for name in ("MODE", "WORKERS", "PUBLIC_BASE_URL", "DATABASE_URL", "BIND", "MAX_BODY_BYTES"):
        assert f"CTT_{name}" in problems
    assert "CTT_LOG_LEVL: unknown setting" in problems
    assert len(caught.value.problems) == 7


SECRETS = {
    "CTT_APP_CREDENTIALS": "{}",
    "CTT_STATE_KEYS": "k1:" + "A" * 43,
    "CTT_EVENT_KEYS": "e1:" + "B" * 43,
    "CTT_RESULT_SIGNING_KEY_FILE": "/etc/ctt/result.pem",
}
SECRETS_AND_URL = {**SECRETS, "CTT_PUBLIC_BASE_URL": "https://broker.example"}


def test_production_requires_its_secrets_and_talks_to_microsoft() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"CTT_MODE": "production", "CTT_PUBLIC_BASE_URL": "https://broker.example"})
    assert len(caught.value.problems) == 4  # credentials, state keys, result key, event keys
    settings = load_settings(
        {"CTT_MODE": "production", "CTT_PUBLIC_BASE_URL": "https://broker.example", **SECRETS}
    )
    assert settings.login_host == "https://login.microsoftonline.com"
    assert settings.login_transport_url is None
    assert "A" * 43 not in repr(settings) and "B" * 43 not in repr(settings)


def test_sandbox_never_points_at_microsoft() -> None:
    settings = load_settings({})
    assert settings.login_host == "https://login.emulator.test"
    assert settings.login_transport_url == "http://127.0.0.1:8400"
    assert settings.redirect_uri == "http://127.0.0.1:8080/oauth/callback"


def test_production_refuses_a_login_transport_override() -> None:
    with pytest.raises(SettingsError, match="only allowed in sandbox"):
        load_settings(
            {
                "CTT_MODE": "production",
                "CTT_PUBLIC_BASE_URL": "https://broker.example",
                "CTT_LOGIN_TRANSPORT_URL": "http://127.0.0.1:8400",
                **SECRETS,
            }
        )


def test_production_requires_an_https_public_url() -> None:
    with pytest.raises(SettingsError, match="https in production"):
        load_settings(
            {"CTT_MODE": "production", "CTT_PUBLIC_BASE_URL": "http://broker.example", **SECRETS}
        )
    settings = load_settings(
        {"CTT_MODE": "production", "CTT_PUBLIC_BASE_URL": "https://broker.example/", **SECRETS}
    )
    assert settings.public_base_url == "https://broker.example"


def test_database_password_never_appears_in_repr() -> None:
    settings = load_settings({"CTT_DATABASE_URL": "postgresql://app:s3cr3t@db.internal/broker"})
    assert settings.database_url == "postgresql+psycopg://app:s3cr3t@db.internal/broker"
    assert "s3cr3t" not in repr(settings)
    assert "s3cr3t" not in str(settings)
    assert "app:***@db.internal" in settings.database_url_redacted


def test_every_setting_has_a_default_and_a_meaning() -> None:
    for name, (default, meaning) in DOCUMENTED.items():
        assert name.isupper() and default and meaning


@pytest.mark.parametrize(
    "url", ["HTTP://broker.example", "Http://broker.example", "hTTp://BROKER.example/"]
)
def test_production_refuses_http_in_any_letter_case(url: str) -> None:
    """Operator writes HTTP://broker.example: before, the https check passed it."""
    with pytest.raises(SettingsError, match="PUBLIC_BASE_URL: must be https"):
        load_settings({"CTT_MODE": "production", "CTT_PUBLIC_BASE_URL": url, **SECRETS})


def test_urls_are_stored_with_lower_case_scheme_and_host() -> None:
    settings = load_settings(
        {"CTT_MODE": "production", "CTT_PUBLIC_BASE_URL": "HTTPS://Broker.Example/", **SECRETS}
    )
    assert settings.public_base_url == "https://broker.example"


@pytest.mark.parametrize("url", ["http://login.example", "HTTP://login.example"])
def test_production_login_browser_url_must_be_https(url: str) -> None:
    """An admin must never be sent to sign in over plain http."""
    env = {
        "CTT_MODE": "production",
        "CTT_PUBLIC_BASE_URL": "https://broker.example",
        "CTT_LOGIN_BROWSER_URL": url,
        **SECRETS,
    }
    with pytest.raises(SettingsError, match="LOGIN_BROWSER_URL: must be https"):
        load_settings(env)


def test_abuse_limits_have_safe_defaults_and_are_checked() -> None:
    settings = load_settings({})
    assert settings.rate_limit_storage == "memory://"
    assert settings.trusted_proxies == ""
    assert settings.swagger_ui is True
    assert load_settings({"CTT_MODE": "production", **SECRETS_AND_URL}).swagger_ui is False
    with pytest.raises(SettingsError) as caught:
        load_settings(
            {
                "CTT_RATE_LIMIT_API": "lots",
                "CTT_RATE_LIMIT_STORAGE": "mongodb://x",
                "CTT_TRUSTED_PROXIES": "10.0.0.0/8, not-a-network",
                "CTT_HEAD_TIMEOUT_SECONDS": "0",
                "CTT_SWAGGER_UI": "yes",
            }
        )
    assert len(caught.value.problems) == 5


def test_redis_password_never_appears_in_repr() -> None:
    settings = load_settings({"CTT_RATE_LIMIT_STORAGE": "redis://:hunter2@cache.internal:6379/0"})
    assert "hunter2" not in repr(settings)


def test_response_validation_is_on_in_sandbox_and_off_in_production_unless_asked() -> None:
    assert load_settings({}).validate_responses is True
    production = {"CTT_MODE": "production", **SECRETS_AND_URL}
    assert load_settings(production).validate_responses is False
    assert load_settings({**production, "CTT_VALIDATE_RESPONSES": "1"}).validate_responses is True
    assert load_settings({"CTT_VALIDATE_RESPONSES": "0"}).validate_responses is False
