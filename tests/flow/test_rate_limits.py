"""Rate limits on the admin's link: clicking one link in a loop cannot fill the database."""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlalchemy import Table, func, select

from broker.db import audit_log, flows
from tests.flow.conftest import World


def count(world: World, table: Table) -> int:
    with world.runtime.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def test_two_hundred_clicks_on_one_link_write_a_bounded_number_of_flows(world: World) -> None:
    """Attacker clicks one link 200 times: before, 200 flow rows and 201 audit rows."""
    path = urlsplit(world.link("REGISTRATION")["url"]).path
    flows_before, audit_before = count(world, flows), count(world, audit_log)
    statuses = [world.broker.get(path, follow_redirects=False).status_code for _ in range(200)]
    budget = int(world.runtime.settings.rate_limit_link.split("/", 1)[0])
    assert statuses[:budget] == [302] * budget
    assert set(statuses[budget:]) == {429}
    assert count(world, flows) - flows_before == budget
    assert count(world, audit_log) - audit_before <= budget
    refused = world.broker.get(path, follow_redirects=False)
    assert refused.headers["content-type"].startswith("text/html")
    assert int(refused.headers["retry-after"]) >= 1
    assert "location" not in refused.headers
