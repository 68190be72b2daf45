"""The console's risk score (alerts/risk.py): hand-computed cases pin the formula that
docs/alerts.md documents; a change of a constant fails here first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerts.risk import FORMULA, RiskIncident, RiskScore, contribution, site_risk, squash
from ganzhi.access import Scope

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)


def inc(severity: str, opened_ago: timedelta, open_for: timedelta | None,
        fp: bool = False) -> RiskIncident:
    opened = NOW - opened_ago
    return RiskIncident(severity, opened, None if open_for is None else opened + open_for,
                        fp)


@pytest.mark.parametrize(("incident", "expected"), [
    # weight 8, age 0 (decay 1), handled at once (factor 1)
    (inc("critical", 0 * H, 0 * H), 8.0),
    # weight 4, a week old (decay 0.5), open 12 h (factor 1.5)
    (inc("major", 7 * D, 12 * H), 3.0),
    # weight 2, two weeks old (decay 0.25), still open for 336 h: capped at 72 (factor 4)
    (inc("minor", 14 * D, None), 2.0),
    # weight 8, three days old (0.5 ** (3/7)), still open 72 h (factor 4)
    (inc("critical", 3 * D, None), 8 * 0.5 ** (3 / 7) * 4),
    (inc("info", 0 * H, None), 0.0),  # info weighs nothing
    (inc("critical", 0 * H, None, fp=True), 0.0),  # nor does a false positive
    (inc("unknown", 0 * H, None), 0.0),
])
def test_each_incident_adds_weight_times_decay_times_unresolved_factor(
        incident: RiskIncident, expected: float) -> None:
    assert contribution(incident, NOW) == pytest.approx(expected, rel=1e-12)


def test_the_score_squashes_the_sum_onto_0_to_100_with_one_decimal() -> None:
    assert [squash(x) for x in (0, 5, 8, 20, 23.775908626191175, 1e6)] == [
        0.0, 22.1, 33.0, 63.2, 69.5, 100.0]


def test_a_sites_score_and_its_components() -> None:
    incidents = [
        inc("major", 7 * D, 12 * H),  # 3.0
        inc("minor", 14 * D, None),  # 2.0, open
        inc("info", 2 * D, 1 * H),  # 0
        inc("critical", 1 * D, 2 * H, fp=True),  # 0: a false positive
    ]
    assert site_risk(incidents, NOW) == RiskScore(
        score=22.1, raw=pytest.approx(5.0), incidents=4, critical=0, open=1,  # type: ignore[arg-type]
        unresolved_hours=349.0, false_positives=1)
    assert site_risk([inc("critical", 0 * H, 0 * H)], NOW).score == 33.0
    assert site_risk([inc("critical", 3 * D, None)], NOW).score == 69.5
    assert site_risk([], NOW) == RiskScore(0.0, 0.0, 0, 0, 0, 0.0, 0)


def test_older_and_shorter_incidents_weigh_less() -> None:
    recent = site_risk([inc("major", 1 * D, 1 * H)], NOW).score
    old = site_risk([inc("major", 20 * D, 1 * H)], NOW).score
    long_open = site_risk([inc("major", 1 * D, 48 * H)], NOW).score
    assert old < recent < long_open


def test_an_incident_opened_after_now_counts_as_new_and_unresolved_for_no_time() -> None:
    # event time may run ahead of the clock a little: no negative age or duration
    ahead = inc("critical", -1 * H, None)
    assert contribution(ahead, NOW) == 8.0


def test_the_formula_names_its_version() -> None:
    assert FORMULA.startswith("risk-v1")


# --- Scope.allows: the live stream's per-subscriber check, the same rule as site_filter


@pytest.mark.parametrize(("scope", "site", "path", "allowed"), [
    (Scope(), "site-x", None, True),  # everything: registered or not
    (Scope(), "site-a1", "/city/district-a/station-a/", True),
    (Scope(path="/city/district-a/"), "site-a1", "/city/district-a/station-a/", True),
    (Scope(path="/city/district-a/"), "site-a1", "/city/district-a/", True),
    (Scope(path="/city/district-a/"), "site-b1", "/city/district-b/station-b/", False),
    (Scope(path="/city/district-a/"), "site-x", None, False),  # not registered
    # a prefix of the name is not the subtree: /city/district-ab/ is a sibling
    (Scope(path="/city/district-a/"), "s", "/city/district-ab/", False),
    (Scope(site_ids=frozenset({"site-a1"})), "site-a1", None, True),
    (Scope(site_ids=frozenset({"site-a1"})), "site-a2", "/city/district-a/", False),
    (Scope(path="/city/district-a/", site_ids=frozenset({"site-a1"})), "site-a1",
     "/city/district-b/", False),
    (Scope(path="/city/district-a/", site_ids=frozenset({"site-a1"})), "site-a1",
     "/city/district-a/station-a/", True),
])
def test_scope_allows_a_loaded_site_like_its_sql_filter(
        scope: Scope, site: str, path: str | None, allowed: bool) -> None:
    assert scope.allows(site, path) is allowed
