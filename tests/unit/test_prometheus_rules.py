"""The shipped Prometheus rules name metrics the services really export."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import alerts.metrics  # noqa: F401 - registers the alerts service's metrics

RULES = Path(__file__).parents[2] / "deploy" / "prometheus" / "ganzhi-alerts.rules.yml"


def exported_names() -> set[str]:
    names = set()
    for collector in REGISTRY.collect():
        names.add(collector.name)
        names.update(s.name for s in collector.samples)
    return names


def test_every_rule_uses_exported_metrics_and_has_a_summary() -> None:
    doc = yaml.safe_load(RULES.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {"GanzhiCluesPilingUp", "GanzhiCluesRefused"}
    exported = exported_names()
    for rule in rules:
        used = set(re.findall(r"\bganzhi_[a-z_]+", rule["expr"]))
        assert used, rule["alert"]
        # counters are exported as <name>_total samples; gauges under their own name
        missing = {m for m in used if m not in exported and m.removesuffix("_total")
                   not in exported}
        assert not missing, (rule["alert"], missing)
        assert rule["annotations"]["summary"]
