"""Site risk scores for the console's risk table: pure, no I/O.

Each incident of a site opened in the window adds

    weight(severity) × 0.5 ** (age_days / HALF_LIFE_DAYS)
                     × (1 + min(hours_unresolved, UNRESOLVED_CAP_H) / UNRESOLVED_UNIT_H)

to the site's raw sum, where ``age_days`` runs from the incident's opening to ``now`` and
``hours_unresolved`` from its opening to its resolution (or to ``now`` while it is open).
False positives (clues the task system rejected) add nothing. The score squashes the raw
sum onto 0..100: ``100 × (1 − exp(−raw / SCALE))``, rounded to one decimal. So a
critical incident opened and handled just now scores 33.0, one opened three days ago and
open since 69.5; info incidents and false positives score 0. Documented in
docs/alerts.md ("Risk scores"); pinned by tests/unit/test_risk.py. Changing a constant
changes ``FORMULA``.

:func:`site_risk` is the specification. The console sums the same formula per site in
SQL (:func:`contribution_sql`, used by ``alerts.overview.site_risks``) and squashes the
sums here (:func:`from_sums`); tests/integration/test_api_console.py checks the two
agree on the same incidents.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

FORMULA = "risk-v1: sum(severity weight x 0.5^(age_days/7) x (1 + min(open_h, 72)/24))," \
          " score = 100 x (1 - exp(-sum/20))"

WEIGHTS: dict[str, float] = {"critical": 8.0, "major": 4.0, "minor": 2.0, "info": 0.0}
HALF_LIFE_DAYS = 7.0
UNRESOLVED_CAP_H = 72.0
UNRESOLVED_UNIT_H = 24.0
SCALE = 20.0


@dataclass(frozen=True)
class RiskIncident:
    """What the score needs of one incident."""

    severity: str  # critical, major, minor, info (anything else weighs 0)
    opened_at: datetime
    resolved_at: datetime | None
    false_positive: bool = False


@dataclass(frozen=True)
class RiskScore:
    """A site's score and what it is made of."""

    score: float  # 0..100, one decimal
    raw: float  # the sum the score squashes
    incidents: int  # in the window, false positives included
    critical: int  # critical ones, false positives excluded
    open: int  # still open at ``now``
    unresolved_hours: float  # hours they stayed unresolved, false positives excluded
    false_positives: int


def _hours(start: datetime, end: datetime) -> float:
    return max((end - start).total_seconds(), 0.0) / 3600.0


def contribution(incident: RiskIncident, now: datetime) -> float:
    """One incident's share of the raw sum (0 for a false positive)."""
    if incident.false_positive:
        return 0.0
    weight = WEIGHTS.get(incident.severity, 0.0)
    age_days = _hours(incident.opened_at, now) / 24.0
    decay: float = 0.5 ** (age_days / HALF_LIFE_DAYS)
    unresolved = _hours(incident.opened_at, incident.resolved_at or now)
    return weight * decay * (1.0 + min(unresolved, UNRESOLVED_CAP_H) / UNRESOLVED_UNIT_H)


def squash(raw: float) -> float:
    """The raw sum onto 0..100, one decimal."""
    return round(100.0 * (1.0 - math.exp(-max(raw, 0.0) / SCALE)), 1)


def contribution_sql(now: str) -> str:
    """:func:`contribution` as a SQL expression over an incident's ``severity``,
    ``opened_at`` and ``resolved_at`` columns, ``now`` being a SQL expression (a
    parameter placeholder); in double precision like the Python. Excluding false
    positives is left to the caller (a ``FILTER``)."""
    weight = " ".join(f"WHEN '{k}' THEN {v!r}::float8" for k, v in WEIGHTS.items())
    age_h = f"GREATEST(date_part('epoch', {now} - opened_at), 0) / 3600.0"
    return (f"(CASE severity {weight} ELSE 0.0::float8 END)"
            f" * power(0.5::float8, {age_h} / 24.0 / {HALF_LIFE_DAYS!r})"
            f" * (1.0 + LEAST({unresolved_hours_sql(now)}, {UNRESOLVED_CAP_H!r})"
            f" / {UNRESOLVED_UNIT_H!r})")


def unresolved_hours_sql(now: str) -> str:
    """Hours from an incident's opening to its resolution (or ``now``) in SQL."""
    return (f"(GREATEST(date_part('epoch', COALESCE(resolved_at, {now}) - opened_at),"
            " 0) / 3600.0)")


def from_sums(raw: float, incidents: int, critical: int, still_open: int,
              unresolved_hours: float, false_positives: int) -> RiskScore:
    """The score from a site's sums (computed elsewhere, e.g. in SQL, exactly as
    :func:`site_risk` sums them)."""
    return RiskScore(score=squash(raw), raw=raw, incidents=incidents, critical=critical,
                     open=still_open, unresolved_hours=round(unresolved_hours, 1),
                     false_positives=false_positives)


def site_risk(incidents: Iterable[RiskIncident], now: datetime) -> RiskScore:
    """The score of one site from its incidents in the window."""
    raw = 0.0
    count = critical = still_open = false_positives = 0
    unresolved = 0.0
    for inc in incidents:
        count += 1
        if inc.resolved_at is None:
            still_open += 1
        if inc.false_positive:
            false_positives += 1
            continue
        if inc.severity == "critical":
            critical += 1
        unresolved += _hours(inc.opened_at, inc.resolved_at or now)
        raw += contribution(inc, now)
    return RiskScore(score=squash(raw), raw=raw, incidents=count, critical=critical,
                     open=still_open, unresolved_hours=round(unresolved, 1),
                     false_positives=false_positives)
