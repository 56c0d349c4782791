"""Swagger UI on the first try: this broker's URL, a plain "Try it out", the key kept on reload."""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import Sandbox, Tab


def test_try_it_out_lists_enterprises_and_the_key_survives_a_reload(
    tab: Tab, sandbox: Sandbox, screenshot: Any
) -> None:
    page = tab.page
    page.goto(f"{sandbox.broker}/ui/")
    servers = page.locator(".servers select")
    servers.wait_for()
    assert servers.input_value() == sandbox.broker

    page.locator("button.btn.authorize").first.click()
    page.locator(".auth-container input").first.fill(sandbox.api_key)
    page.locator(".auth-btn-wrapper button.authorize").first.click()
    page.locator(".auth-btn-wrapper button.btn-done").first.click()
    page.reload()
    page.locator("button.btn.authorize.locked").first.wait_for()

    operation = page.locator("#operations-Enterprises-listEnterprises")
    operation.locator(".opblock-summary").first.click()
    operation.locator("button.try-out__btn").click()
    operation.locator("button.execute").click()
    request_url = operation.locator(".request-url pre").first
    request_url.wait_for()
    sent = request_url.inner_text()
    assert sent.startswith(f"{sandbox.broker}/enterprises")
    assert "externalId" not in sent and "cursor" not in sent
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    assert status.inner_text().strip() == "200"
    screenshot(page)
