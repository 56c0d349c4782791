"""How ``python -m sandbox`` derives consistent addresses from the environment."""

from __future__ import annotations

import pytest

from sandbox.__main__ import SandboxError, plan_from_environment


def test_defaults_match_the_broker_settings_defaults() -> None:
    plan = plan_from_environment({})
    assert (plan.broker_bind, plan.broker_url) == ("127.0.0.1:8080", "http://127.0.0.1:8080")
    assert (plan.emulator_port, plan.portal_port) == (8400, 8090)
    assert plan.env["CTT_PUBLIC_BASE_URL"] == "http://127.0.0.1:8080"
    assert plan.env["CTT_LOGIN_BROWSER_URL"] == "http://127.0.0.1:8400"
    assert plan.env["CTT_LOGIN_TRANSPORT_URL"] == "http://127.0.0.1:8400"


def test_bind_alone_moves_the_public_url() -> None:
    plan = plan_from_environment({"CTT_BIND": "0.0.0.0:9000"})
    assert plan.broker_url == "http://127.0.0.1:9000"
    assert plan.env["CTT_PUBLIC_BASE_URL"] == "http://127.0.0.1:9000"


def test_loopback_public_url_alone_moves_the_bind() -> None:
    plan = plan_from_environment({"CTT_PUBLIC_BASE_URL": "http://localhost:9100"})
    assert plan.env["CTT_BIND"] == "127.0.0.1:9100"
    assert plan.env["CTT_PUBLIC_BASE_URL"] == "http://localhost:9100"


def test_emulator_port_comes_from_its_variable_or_the_login_urls() -> None:
    plan = plan_from_environment({"SANDBOX_EMULATOR_PORT": "9400"})
    assert plan.env["CTT_LOGIN_BROWSER_URL"] == "http://127.0.0.1:9400"
    plan = plan_from_environment({"CTT_LOGIN_TRANSPORT_URL": "http://127.0.0.1:9401"})
    assert plan.emulator_port == 9401
    assert plan.env["CTT_LOGIN_BROWSER_URL"] == "http://127.0.0.1:9401"


def test_a_bad_port_is_refused() -> None:
    with pytest.raises(SandboxError, match="SANDBOX_PORTAL_PORT"):
        plan_from_environment({"SANDBOX_PORTAL_PORT": "http"})
