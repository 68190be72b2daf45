"""``ganzhi rules`` against a real PostgreSQL: import, set, delete, show, refuse bad input."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import yaml

from ganzhi.settings import Settings
from stream.rules.admin import main
from stream.rules.sources import RulesProvider

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("GANZHI_DB__DSN", pg_dsn)
    return Settings()


def rows(dsn: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(dsn) as conn:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            "SELECT device_class, scope, scope_key FROM rule_config ORDER BY 1, 2, 3")]


def test_import_set_delete_show(settings: Settings, pg_dsn: str, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text("cold_store:\n  defaults: {door_open: {limit_s: 600}}\n"
                 "  devices:\n    site-a/fz-1: {variant: frozen}\n"
                 "device_health:\n  devices:\n    site-a/ghost: {expected_interval_s: 5}\n")
    assert main(["check", str(f)], settings) == 0
    assert main(["import", str(f)], settings) == 0
    assert rows(pg_dsn) == [("cold_store", "defaults", ""), ("cold_store", "device", "site-a/fz-1"),
                            ("device_health", "device", "site-a/ghost")]
    assert main(["set", "elevator", "device", "site-a/el-1",
                 "{rated_speed_mps: 1.0, rules: {overspeed: {timer_s: 4}}}"], settings) == 0
    assert main(["delete", "cold_store", "device", "site-a/fz-1"], settings) == 0
    capsys.readouterr()
    assert main(["show", "--device", "site-a/el-1"], settings) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["elevator"]["rated_speed_mps"] == 1.0
    assert shown["elevator"]["rules"]["elevator.overspeed"]["timer_s"] == 4
    assert shown["cold_store"]["door_open"]["limit_s"] == 600
    provider = RulesProvider(None, pg_dsn, settings.stream.cold_chain,
                             settings.stream.device_health)
    assert provider.load().expected_devices() == [("site-a", "ghost")]
    assert provider.refresh() is False
    assert main(["set", "cold_store", "site", "site-a", "{humidity: false}"], settings) == 0
    assert provider.refresh() is True
    assert provider.rules.cold_store("site-a", "x").params.humidity is None


def test_invalid_entries_are_refused_and_change_nothing(
        settings: Settings, pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["set", "cold_store", "site", "site-a", "{door_open: {limit: 5}}"],
                settings) == 1
    assert "unknown keys ['limit']" in capsys.readouterr().out
    assert main(["set", "elevator", "defaults", "[1, 2]"], settings) == 1
    assert rows(pg_dsn) == []
