"""The rules loader reads the registry's device parameters (``devices.params``) from a real
PostgreSQL alongside ``rule_config``, and reloads when they change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from edge.config import AgentConfig
from ganzhi.contracts import DeviceClass
from ganzhi.settings import ColdChainRuleSettings, HealthRuleSettings
from stream.rules.sources import REGISTRY_INVALID, RulesProvider

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "edge"


def register(dsn: str, site: str, device: str, cls: str, params: dict[str, Any]) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO jurisdictions (id, name, level, path) VALUES"
                     " ('city', 'City', 'city', '/city/') ON CONFLICT DO NOTHING")
        conn.execute("INSERT INTO sites (id, jurisdiction_id, name, category) VALUES"
                     " (%s, 'city', %s, 'cold_store') ON CONFLICT DO NOTHING", (site, site))
        conn.execute("INSERT INTO devices (site_id, device_id, device_class, params)"
                     " VALUES (%s, %s, %s, %s) ON CONFLICT (site_id, device_id) DO UPDATE"
                     " SET params = EXCLUDED.params, updated_at = now()",
                     (site, device, cls, json.dumps(params)))


def provider(dsn: str) -> RulesProvider:
    return RulesProvider(None, dsn, ColdChainRuleSettings(), HealthRuleSettings())


def test_loader_reads_device_params_and_reloads_on_change(pg_dsn: str) -> None:
    register(pg_dsn, "site-a", "fz-1", "cold_store", {})
    register(pg_dsn, "site-a", "el-1", "elevator", {"rated_speed_mps": 1.75})
    p = provider(pg_dsn)
    rules = p.load()
    assert rules.missing(DeviceClass.COLD_STORE, "site-a", "fz-1") == ("variant",)
    assert rules.cold_store("site-a", "fz-1").params.temperature_high is None
    assert rules.elevator("site-a", "el-1").params.rated_speed_mps == 1.75
    assert rules.missing(DeviceClass.ELEVATOR, "site-a", "el-1") == ("top_landing_m",)
    assert p.refresh() is False  # nothing changed

    register(pg_dsn, "site-a", "fz-1", "cold_store", {"variant": "frozen"})
    assert p.refresh() is True
    fz = p.rules.cold_store("site-a", "fz-1").params
    assert fz.variant == "frozen" and fz.frozen_rebound is not None
    assert fz.temperature_high is not None and fz.temperature_high.limit == -18.0
    assert p.rules.missing(DeviceClass.COLD_STORE, "site-a", "fz-1") == ()
    assert p.refresh() is False

    # rule_config's entry for the device overrides the registry (explicit rules win).
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("INSERT INTO rule_config (device_class, scope, scope_key, params)"
                     " VALUES ('cold_store', 'device', 'site-a/fz-1', %s)",
                     (json.dumps({"temperature_high": {"limit": -22.0}}),))
    assert p.refresh() is True
    th = p.rules.cold_store("site-a", "fz-1").params.temperature_high
    assert th is not None and th.limit == -22.0


def test_a_row_written_around_the_registry_is_left_out_alone(pg_dsn: str) -> None:
    register(pg_dsn, "site-a", "fz-1", "cold_store", {"variant": "frozen"})
    register(pg_dsn, "site-a", "bad", "cold_store", {"variant": "warm"})
    p = provider(pg_dsn)
    rules = p.load()  # not refused whole: one bad row does not stop the worker
    assert rules.cold_store("site-a", "fz-1").params.variant == "frozen"
    assert rules.missing(DeviceClass.COLD_STORE, "site-a", "bad") == ("variant",)
    assert REGISTRY_INVALID._value.get() == 1
    register(pg_dsn, "site-a", "bad", "cold_store", {"variant": "chilled"})
    assert p.refresh() is True
    assert p.rules.missing(DeviceClass.COLD_STORE, "site-a", "bad") == ()
    assert REGISTRY_INVALID._value.get() == 0


def test_edge_box_params_as_registry_rows(pg_dsn: str) -> None:
    """The params an edge box file declares are the rows the registry imports."""
    cfg = AgentConfig.model_validate(yaml.safe_load((DEPLOY / "cold-store.yaml").read_text()))
    for site, device, cls, params in cfg.registry_entries():
        register(pg_dsn, site, device, cls.value, params)
    rules = provider(pg_dsn).load()
    assert rules.cold_store("shop-0421", "freezer-01").params.variant == "frozen"
    assert rules.cold_store("shop-0421", "chiller-01").params.variant == "chilled"
