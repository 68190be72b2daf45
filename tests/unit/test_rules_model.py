"""The rules model: precedence, switching rules off and on, errors that name the place."""

from __future__ import annotations

from pathlib import Path

import pytest

from ganzhi.contracts import Severity
from ganzhi.settings import ColdChainRuleSettings, HealthRuleSettings
from stream.rules.model import Rules, RulesDoc, RulesError
from stream.rules.sources import RulesProvider, doc_from_rows, read_file, rows_from_doc

DOC = {
    "cold_store": {
        "defaults": {"door_open": {"limit_s": 600}},
        "sites": {"site-b": {"humidity": False, "door_open": {"limit_s": 900}}},
        "devices": {
            "site-b/freezer-1": {"variant": "frozen", "temperature_high": {"limit": -20.0}},
            "site-b/room-2": {"temperature_low": {"limit": 1.0}, "allowed_lateness_s": 30},
        },
    },
    "elevator": {
        "defaults": {"rules": {"door_close_fault": {"timer_s": 40}}},
        "devices": {"site-a/el-1": {"rated_speed_mps": 1.75, "top_landing_m": 30.0,
                                    "rules": {"overspeed": {"timer_s": 3}, "emergency_call":
                                              False}}},
    },
    "device_health": {
        "defaults": {"expected_interval_s": 30},
        "sites": {"site-c": {"enabled": False}},
        "devices": {"site-a/el-1": {"expected_interval_s": 5},
                    "site-c/cam-1": {"enabled": True}},
    },
}


def rules(doc: dict[str, object] = DOC, **env: object) -> Rules:
    return Rules(RulesDoc.model_validate(doc), ColdChainRuleSettings(**env),  # type: ignore[arg-type]
                 HealthRuleSettings())


def test_cold_store_precedence_device_over_site_over_defaults() -> None:
    r = rules()
    a = r.cold_store("site-a", "cr-1").params
    # configured nowhere: no variant guessed, no band rule, the rest as configured
    assert a.variant is None and a.temperature_high is None and a.temperature_low is None
    assert a.door_open is not None and a.door_open.limit_s == 600
    assert r.cold_store("site-a", "cr-1").missing == ("variant",)
    assert r.cold_store("site-b", "freezer-1").missing == ()
    b = r.cold_store("site-b", "cr-9").params
    assert b.humidity is None and b.door_open is not None and b.door_open.limit_s == 900
    fz = r.cold_store("site-b", "freezer-1").params
    assert fz.variant == "frozen" and fz.temperature_high is not None
    assert fz.temperature_high.limit == -20.0 and fz.frozen_rebound is not None
    assert fz.temperature_low is None  # frozen rooms have no freezing-risk rule
    room2 = r.cold_store("site-b", "room-2")
    assert room2.allowed_lateness_s == 30 and room2.params.temperature_low is not None
    assert room2.params.temperature_low.limit == 1.0


def test_environment_knobs_sit_between_code_and_document() -> None:
    r = rules({"cold_store": {"defaults": {"variant": "chilled"}}}, duration_s=120, limit_c=5.0)
    chilled = r.cold_store("s", "d").params.temperature_high
    assert chilled is not None and (chilled.limit, chilled.duration_s) == (5.0, 120)
    frozen = rules({"cold_store": {"defaults": {"variant": "frozen"}}}, duration_s=120,
                   limit_c=5.0).cold_store("s", "d").params.temperature_high
    # the chilled limit does not leak into frozen rooms; the timings do
    assert frozen is not None and (frozen.limit, frozen.duration_s) == (-18.0, 120)
    doc = {"cold_store": {"defaults": {"temperature_high": {"duration_s": 900}}}}
    th = rules(doc, duration_s=120).cold_store("s", "d").params.temperature_high
    assert th is not None and th.duration_s == 900


def test_rule_off_by_default_can_be_switched_on() -> None:
    r = rules({"cold_store": {"devices": {"s/d": {"frozen_rebound": True}}}})
    fr = r.cold_store("s", "d").params.frozen_rebound
    assert fr is not None and fr.limit == -15.0 and fr.severity is Severity.CRITICAL


def test_elevator_geometry_and_rule_timers() -> None:
    r = rules()
    el = r.elevator("site-a", "el-1")
    assert el.params.rated_speed_mps == 1.75 and el.params.top_landing_m == 30.0
    assert el.params.rule("elevator.overspeed").timer_s == 3
    assert el.params.rule("elevator.door_close_fault").timer_s == 40  # from defaults
    assert el.params.rule("elevator.emergency_call").enabled is False
    other = r.elevator("site-a", "el-2").params
    assert other.rated_speed_mps is None and other.rule("elevator.overspeed").timer_s == 2


def test_health_intervals_switches_and_expected_devices() -> None:
    r = rules()
    p = r.health("site-a", "el-1")
    assert p is not None and p.expected_interval_s == 5 and p.offline_after_s == 15
    assert r.health("site-c", "cam-9") is None
    assert r.health("site-c", "cam-1") is not None  # device switch beats the site's
    assert r.expected_devices() == [("site-a", "el-1"), ("site-c", "cam-1")]


@pytest.mark.parametrize(("doc", "match"), [
    ({"cold_store": {"devices": {"s/d": {"door_open": {"limit": 3}}}}},
     r"cold_store\.devices\.s/d\.door_open: unknown keys \['limit'\]"),
    ({"cold_store": {"sites": {"s": {"door_open": {"limit_s": "soon"}}}}},
     r"cold_store\.sites\.s\.door_open: .*limit_s"),
    ({"cold_store": {"defaults": {"variant": "warm"}}},
     r"variant: expected chilled, frozen or other"),
    ({"cold_store": {"defaults": {"temperature_high": {"rule_id": "x"}}}}, "unknown keys"),
    ({"elevator": {"defaults": {"rules": {"overspeeed": {"timer_s": 1}}}}},
     "unknown elevator rule 'overspeeed'"),
    ({"elevator": {"devices": {"el-1": {}}}}, "expected 'site/device'"),
    ({"device_health": {"defaults": {"expected_interval_s": 0}}}, "must be > 0"),
    ({"elevator": {"defaults": {"speed": 1}}}, r"elevator\.defaults\.speed: unknown key"),
])
def test_errors_name_the_place(doc: dict[str, object], match: str) -> None:
    with pytest.raises(RulesError, match=match):
        rules(doc)


def test_unknown_class_is_refused() -> None:
    with pytest.raises(ValueError, match="kitchen"):
        RulesDoc.model_validate({"kitchen": {}})


def test_table_rows_round_trip() -> None:
    doc = RulesDoc.model_validate(DOC)
    rows = rows_from_doc(doc)
    assert ("elevator", "device", "site-a/el-1", DOC["elevator"]["devices"]["site-a/el-1"]) in rows  # type: ignore[index]
    assert doc_from_rows(rows) == doc


def test_overlay_database_over_file_entry_by_entry() -> None:
    file_doc = RulesDoc.model_validate(DOC)
    db_doc = RulesDoc.model_validate(
        {"cold_store": {"sites": {"site-b": {"door_open": {"limit_s": 120}}}}})
    merged = file_doc.overlay(db_doc)
    assert merged.cold_store.sites["site-b"] == {"humidity": False,
                                                 "door_open": {"limit_s": 120}}
    assert merged.elevator == file_doc.elevator


def test_file_provider_reloads_on_change_and_keeps_last_good(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("cold_store:\n  defaults: {door_open: {limit_s: 100}}\n")
    provider = RulesProvider(path, None, ColdChainRuleSettings(), HealthRuleSettings())
    limit = lambda: provider.rules.cold_store("s", "d").params.door_open.limit_s  # type: ignore[union-attr]  # noqa: E731
    provider.load()
    assert limit() == 100 and provider.refresh() is False
    path.write_text("cold_store:\n  defaults: {door_open: {limit_s: 200}}\n")
    assert provider.refresh() is True and limit() == 200
    path.write_text("cold_store:\n  defaults: {door_open: {limit_sec: 300}}\n")
    assert provider.refresh() is False and limit() == 200  # refused, old rules stay
    path.write_text("cold_store: [not, a, mapping]\n")
    assert provider.refresh() is False and limit() == 200


def test_the_deploy_example_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy/rules/site-rules.example.yaml"
    r = Rules(read_file(example))
    assert r.cold_store("market-east", "freezer-01").params.variant == "frozen"
    assert r.elevator("tower-a", "lift-1").params.top_landing_m == 57.0
    assert len(r.expected_devices()) == 4


def test_reported_period_beats_class_default_not_explicit_settings() -> None:
    r = rules()
    p = r.health("site-x", "d", reported_period_s=7)
    assert p is not None and p.expected_interval_s == 7  # over defaults (30)
    p = r.health("site-a", "el-1", reported_period_s=7)
    assert p is not None and p.expected_interval_s == 5  # the device's own entry wins
