"""Rollups pre-aggregated in the worker: one aggregate per (site, device, metric, bucket).

A batch's new readings are folded into :class:`Agg` values here and merged into the stored
rollups by one upsert per bucket (:data:`stream.sinks.readings`), with the same arithmetic
as :func:`merge`: counts and sums add, min and max take the extremes, and ``last`` is the
value with the greatest ``(time, value)``. Every part of that is commutative and
associative, so the stored rollup does not depend on how readings were split into batches
or in which order the batches (late ones included) arrived.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

Key = tuple[str, str, str, datetime]  # site_id, device_id, metric, bucket start (UTC)

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Agg:
    count: int
    sum: float
    min: float
    max: float
    last_time: datetime
    last: float

    @property
    def mean(self) -> float:
        return self.sum / self.count


def merge(a: Agg, b: Agg) -> Agg:
    last_time, last = max((a.last_time, a.last), (b.last_time, b.last))
    return Agg(a.count + b.count, a.sum + b.sum, min(a.min, b.min), max(a.max, b.max),
               last_time, last)


def bucket_start(t: datetime, width: timedelta) -> datetime:
    """Start (UTC) of the minute or hour holding ``t``, as ``date_trunc`` in UTC."""
    u = t.astimezone(UTC)
    if width == MINUTE:
        return u.replace(second=0, microsecond=0)
    if width == HOUR:
        return u.replace(minute=0, second=0, microsecond=0)
    raise ValueError(f"unsupported bucket width {width}")


class _Acc:
    __slots__ = ("count", "last", "last_time", "max", "min", "sum")

    def __init__(self, t: datetime, v: float) -> None:
        self.count, self.sum, self.min, self.max = 1, v, v, v
        self.last_time, self.last = t, v


def aggregate(
    readings: Iterable[tuple[str, str, str, datetime, float]],
) -> tuple[dict[Key, Agg], dict[Key, Agg]]:
    """Minute and hour aggregates of ``(site_id, device_id, metric, time, value)``."""
    accs: dict[Key, _Acc] = {}
    utc: dict[datetime, tuple[datetime, datetime]] = {}  # a batch repeats its times
    for site, device, metric, t, v in readings:
        tm = utc.get(t)
        if tm is None:
            u = t.astimezone(UTC)
            tm = utc[t] = (u, u.replace(second=0, microsecond=0))
        u, minute = tm
        key = (site, device, metric, minute)
        acc = accs.get(key)
        if acc is None:
            accs[key] = _Acc(u, v)
            continue
        acc.count += 1
        acc.sum += v
        if v < acc.min:
            acc.min = v
        if v > acc.max:
            acc.max = v
        if (u, v) > (acc.last_time, acc.last):
            acc.last_time, acc.last = u, v
    minutes = {k: Agg(a.count, a.sum, a.min, a.max, a.last_time, a.last)
               for k, a in accs.items()}
    hours: dict[Key, Agg] = {}
    for (site, device, metric, b), agg in minutes.items():
        hk = (site, device, metric, b.replace(minute=0))
        prev = hours.get(hk)
        hours[hk] = agg if prev is None else merge(prev, agg)
    return minutes, hours


class Reading(Protocol):
    """What :func:`aggregate_minutes` reads of a row (``stream.sinks.readings.ReadingRow``)."""

    @property
    def site_id(self) -> str: ...
    @property
    def device_id(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def time(self) -> datetime: ...
    @property
    def value(self) -> float: ...


def aggregate_minutes(rows: Iterable[Reading]) -> dict[Key, list[Any]]:
    """Minute aggregates of the rows as ``[count, sum, min, max, last_time, last]`` lists
    (``Agg(*acc)`` is the :class:`Agg`): what :func:`aggregate` gives as minutes, without
    the hours (the compaction derives those from the minutes). The sink's hot path, so no
    object per bucket beyond the list."""
    accs: dict[Key, list[Any]] = {}
    utc: dict[datetime, tuple[datetime, datetime]] = {}  # a batch repeats its times
    for r in rows:
        t = r.time
        tm = utc.get(t)
        if tm is None:
            u = t.astimezone(UTC)
            tm = utc[t] = (u, u.replace(second=0, microsecond=0))
        u, minute = tm
        v = r.value
        key = (r.site_id, r.device_id, r.metric, minute)
        acc = accs.get(key)
        if acc is None:
            accs[key] = [1, v, v, v, u, v]
            continue
        acc[0] += 1
        acc[1] += v
        if v < acc[2]:
            acc[2] = v
        if v > acc[3]:
            acc[3] = v
        lt = acc[4]
        if u > lt or (u == lt and v > acc[5]):
            acc[4] = u
            acc[5] = v
    return accs


def merge_into(into: dict[Key, Agg], more: dict[Key, Agg]) -> dict[Key, Agg]:
    """``into`` with ``more`` merged bucket by bucket (what the upsert does in SQL)."""
    for k, agg in more.items():
        prev = into.get(k)
        into[k] = agg if prev is None else merge(prev, agg)
    return into
