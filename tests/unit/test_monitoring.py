"""The platform's monitoring files (deploy/prometheus, deploy/grafana): valid for promtool,
their alerting rules behave as their unit tests say, and every ganzhi metric they read is
one the services export (a renamed metric would otherwise leave an alert that never fires)."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
# Metrics of other exporters the rules and dashboards read.
FOREIGN = ("node_", "up", "process_")


def promtool() -> str:
    """promtool from PATH or from var/tools (``./dev test`` puts it there)."""
    found = shutil.which("promtool") or str(ROOT / "var" / "tools" / "bin" / "promtool")
    if not os.access(found, os.X_OK):
        pytest.fail("promtool not found: ./dev test extracts it into var/tools/bin")
    return found


def run(*args: str, cwd: Path = PROM) -> str:
    res = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def exported() -> set[str]:
    """Every metric name the platform's modules register, as Prometheus exposes them."""
    for pkg in ("ingest", "stream", "alerts", "api", "edge", "ganzhi"):
        p = importlib.import_module(pkg)
        for m in pkgutil.walk_packages(p.__path__, pkg + "."):
            if not m.name.endswith("__main__"):
                importlib.import_module(m.name)
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",), "info": ("_info",),
                "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("", "_sum", "_count", "_created")}
    names = set()
    for mf in REGISTRY.collect():  # (a metric with labels has no sample until used)
        names.update(mf.name + s for s in suffixes.get(mf.type, ("",)))
        names.update(s.name for s in mf.samples)
    return names


def rule_exprs() -> list[str]:
    doc = yaml.safe_load((PROM / "ganzhi-alerts.rules.yml").read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                out.append((f"{path.name}: {panel['title']}", target["expr"]))
    return out


def metric_names(expr: str) -> set[str]:
    """Identifiers in ``expr`` that look like metric names (``ganzhi_*`` and others)."""
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    return {w for w in re.findall(r"\b[a-z_][a-z0-9_]*\b", expr)
            if w.startswith(("ganzhi_", *FOREIGN))}


def test_the_config_and_the_rules_are_valid() -> None:
    assert "SUCCESS" in run("check", "config", "prometheus.yml")
    out = run("check", "rules", "ganzhi-alerts.rules.yml")
    assert re.search(r"SUCCESS: (\d+) rules found", out)


def test_the_alerting_rules_fire_as_their_unit_tests_say() -> None:
    tests = sorted((PROM / "tests").glob("*.test.yml"))
    assert tests
    assert "SUCCESS" in run("test", "rules", *[str(t) for t in tests])


def test_every_metric_read_is_exported() -> None:
    have = exported()
    read = {(where, name) for where, e in
            [("rules", e) for e in rule_exprs()] + dashboard_exprs()
            for name in metric_names(e) if name.startswith("ganzhi_")}
    assert len(read) > 20
    missing = sorted((w, n) for w, n in read if n not in have)
    assert not missing, f"read but not exported: {missing}"


def test_the_dashboard_queries_parse(tmp_path: Path) -> None:
    """Each dashboard query as a recording rule, so promtool parses it."""
    assert DASHBOARDS
    rules = [{"record": f"dashboard:query_{i}",
              "expr": e.replace("$__rate_interval", "5m").replace("${datasource}", "")}
             for i, (_, e) in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in run("check", "rules", str(path))


def test_every_alert_reads_a_metric_and_says_what_is_wrong() -> None:
    doc = yaml.safe_load((PROM / "ganzhi-alerts.rules.yml").read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {"GanzhiCluesPilingUp", "GanzhiCluesRefused",
                                           "GanzhiStreamLagGrowing", "GanzhiDiskFilling"}
    for rule in rules:
        assert metric_names(rule["expr"]), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]


def test_the_metric_name_scan_is_not_blind() -> None:
    assert metric_names('sum by (reason) (rate(ganzhi_stream_dead_lettered_total'
                        '{reason="x_total"}[5m])) / up') == {
        "ganzhi_stream_dead_lettered_total", "up"}
