"""The example dashboard and alert rules name only metrics the broker exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from broker import metrics
from broker.runtime import Runtime

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.parametrize("name", ["grafana-dashboard.json", "alerts.yml"])
def test_examples_only_use_exported_metrics(runtime: Runtime, name: str) -> None:
    text = (DEPLOY / name).read_text("utf-8")
    (json.loads if name.endswith(".json") else yaml.safe_load)(text)  # well-formed
    metrics.observe_request("getHealth", 200, 0.01)  # every labelled family has a sample
    metrics.flow_started("REGISTRATION")
    metrics.flow_finished("REGISTRATION", "completed", None)
    metrics.flow_finished("REGISTRATION", "failed", "ACCESS_DENIED")
    metrics.flow_finished("GET_PRESENCE_CONSENT", "pending", None)
    metrics.MeteredTransport._observe("token", "ok", 0.0)
    exported = {
        sample.name
        for family in text_string_to_metric_families(metrics.scrape(runtime.engine).decode())
        for sample in family.samples
    }
    used = set(re.findall(r"\bctt_[a-z_]+", text)) - {"ctt_broker"}
    assert used and used <= exported, used - exported


def test_compose_uses_only_known_settings_and_the_wheel_image() -> None:
    from broker.settings import DOCUMENTED, PREFIX

    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text("utf-8"))
    assert set(compose["services"]) >= {"broker", "worker", "postgres", "redis", "migrate"}
    for name in ("broker", "worker", "migrate"):
        settings = compose["services"][name]["environment"]
        assert settings["CTT_MODE"] == "production"
        unknown = [key for key in settings if key[len(PREFIX) :] not in DOCUMENTED]
        assert unknown == []
    dockerfile = (DEPLOY.parent / "Dockerfile").read_text("utf-8")
    # The wheel, with the dependencies pinned where the tests pinned them.
    assert "COPY dist/ctt_broker-*.whl constraints.txt /tmp/" in dockerfile
    assert "pip install --no-cache-dir -c /tmp/constraints.txt /tmp/ctt_broker-*.whl" in dockerfile
