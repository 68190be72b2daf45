"""Rollups pre-aggregated in the worker: merging is independent of split and order."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from stream.sinks.rollups import HOUR, MINUTE, Agg, Key, aggregate, bucket_start, merge_into

T0 = datetime(2026, 3, 1, 23, 58, tzinfo=UTC)

Reading = tuple[str, str, str, datetime, float]

readings_st = st.lists(
    st.tuples(
        st.sampled_from(["site-a", "site-b"]),
        st.sampled_from(["d1", "d2"]),
        st.sampled_from(["temperature", "humidity"]),
        st.integers(0, 3 * 3600).map(lambda s: T0 + timedelta(seconds=s)),
        st.floats(-50, 50, allow_nan=False).map(lambda v: round(v, 2)),
    ),
    max_size=60,
)


def _brute(readings: list[Reading], width: timedelta) -> dict[Key, Agg]:
    groups: dict[Key, list[tuple[datetime, float]]] = {}
    for site, device, metric, t, v in readings:
        groups.setdefault((site, device, metric, bucket_start(t, width)), []).append((t, v))
    out = {}
    for k, tv in groups.items():
        values = [v for _, v in tv]
        last_time, last = max(tv)
        out[k] = Agg(len(values), math.fsum(values), min(values), max(values), last_time, last)
    return out


def _same(a: dict[Key, Agg], b: dict[Key, Agg]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        assert (x.count, x.min, x.max, x.last_time, x.last) == (
            y.count, y.min, y.max, y.last_time, y.last), k
        assert math.isclose(x.sum, y.sum, rel_tol=1e-9, abs_tol=1e-9), k


@given(readings_st)
def test_aggregate_equals_a_group_by(readings: list[Reading]) -> None:
    minutes, hours = aggregate(readings)
    _same(minutes, _brute(readings, MINUTE))
    _same(hours, _brute(readings, HOUR))


@given(readings_st, st.data())
def test_merging_batches_in_any_split_and_order_equals_aggregating_all(
    readings: list[Reading], data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(readings)), max_size=5)))
    parts = [readings[i:j] for i, j in zip([0, *cuts], [*cuts, len(readings)], strict=True)]
    order = data.draw(st.permutations(range(len(parts))))
    minutes: dict[Key, Agg] = {}
    hours: dict[Key, Agg] = {}
    for i in order:
        m, h = aggregate(parts[i])
        merge_into(minutes, m)
        merge_into(hours, h)
    all_m, all_h = aggregate(readings)
    _same(minutes, all_m)
    _same(hours, all_h)


def test_buckets_are_utc_and_last_is_the_latest_reading() -> None:
    plus8 = timezone(timedelta(hours=8))
    t = datetime(2026, 3, 2, 8, 0, 30, tzinfo=plus8)  # 2026-03-02 00:00:30 UTC
    minutes, hours = aggregate([
        ("s", "d", "m", t, 5.0),
        ("s", "d", "m", t - timedelta(seconds=40), 7.0),  # the previous minute, previous day
        ("s", "d", "m", t - timedelta(seconds=10), 1.0),
    ])
    assert sorted(k[3] for k in minutes) == [datetime(2026, 3, 1, 23, 59, tzinfo=UTC),
                                            datetime(2026, 3, 2, 0, 0, tzinfo=UTC)]
    cur = minutes[("s", "d", "m", datetime(2026, 3, 2, 0, 0, tzinfo=UTC))]
    assert (cur.count, cur.min, cur.max, cur.last, cur.mean) == (2, 1.0, 5.0, 5.0, 3.0)
    assert cur.last_time == t
    assert sorted(k[3] for k in hours) == [datetime(2026, 3, 1, 23, tzinfo=UTC),
                                          datetime(2026, 3, 2, 0, tzinfo=UTC)]
