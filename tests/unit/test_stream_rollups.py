"""Rollups pre-aggregated in the worker: merging is independent of split and order; the
sink's in-batch dedupe and minute deltas equal brute force."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ganzhi.settings import get_settings
from stream.sinks.readings import ReadingRow, ReadingsSink, new_messages
from stream.sinks.rollups import (
    HOUR,
    MINUTE,
    Agg,
    Key,
    aggregate,
    aggregate_minutes,
    bucket_start,
    merge_into,
)

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


# --- the sink's hot path (issue 13, migration 0015) --------------------------------------


def _rows_of(readings: list[Reading]) -> list[ReadingRow]:
    return [ReadingRow(t, site, device, metric, v, "u", uuid.UUID(int=1))
            for site, device, metric, t, v in readings]


@given(readings_st)
def test_aggregate_minutes_equals_the_minutes_of_aggregate(readings: list[Reading]) -> None:
    minutes, _ = aggregate(readings)
    fast = {k: Agg(*acc) for k, acc in aggregate_minutes(_rows_of(readings)).items()}
    _same(fast, minutes)
    _same(fast, _brute(readings, MINUTE))


@given(readings_st, st.data())
def test_minute_deltas_merged_in_any_split_give_the_hours(
    readings: list[Reading], data: st.DataObject
) -> None:
    """What the compaction does: minute deltas of any batches, merged per minute and then
    per hour, equal aggregating everything at once."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(readings)), max_size=5)))
    parts = [readings[i:j] for i, j in zip([0, *cuts], [*cuts, len(readings)], strict=True)]
    minutes: dict[Key, Agg] = {}
    for part in data.draw(st.permutations(parts)):
        merge_into(minutes, {k: Agg(*a) for k, a in aggregate_minutes(_rows_of(part)).items()})
    hours: dict[Key, Agg] = {}
    for (site, device, metric, b), agg in minutes.items():
        merge_into(hours, {(site, device, metric, bucket_start(b, HOUR)): agg})
    _same(minutes, _brute(readings, MINUTE))
    _same(hours, _brute(readings, HOUR))


_msg_st = st.tuples(
    st.integers(0, 5),  # message id
    st.lists(st.tuples(st.sampled_from(["temperature", "humidity"]), st.integers(0, 3)),
             min_size=1, max_size=4, unique=True),  # (metric, second): unique per message
)


@given(st.lists(_msg_st, max_size=12), st.data())
def test_new_messages_equals_a_brute_force_dedupe(
    messages: list[tuple[int, list[tuple[str, int]]]], data: st.DataObject
) -> None:
    """Batches as the stream makes them (messages' readings consecutive), with repeats of
    messages back to back or apart, and sometimes shuffled: each (msg_id, metric, time)
    kept once, in order, and each message's earliest time."""
    ids = {i: uuid.UUID(int=i) for i in range(6)}
    body: dict[int, list[tuple[str, int]]] = {}
    rows = []
    for i, readings in messages:
        readings = body.setdefault(i, readings)  # a repeat is the same message
        rows += [ReadingRow(T0 + timedelta(seconds=s), "s", "d", m, 1.0, "u", ids[i])
                 for m, s in readings]
    if data.draw(st.booleans()):
        rows = data.draw(st.permutations(rows))
    unique, first = new_messages(rows)
    seen: set[tuple[uuid.UUID, str, datetime]] = set()
    want = []
    for r in rows:
        if (r.msg_id, r.metric, r.time) not in seen:
            seen.add((r.msg_id, r.metric, r.time))
            want.append(r)
    assert unique == want
    assert first == {m: min(r.time for r in rows if r.msg_id == m)
                     for m in {r.msg_id for r in rows}}


def test_compaction_interval_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    try:
        assert ReadingsSink("postgresql://unused").compact_every_s == 5.0
        monkeypatch.setenv("GANZHI_STREAM__ROLLUP_COMPACT_S", "0.5")
        get_settings.cache_clear()
        assert ReadingsSink("postgresql://unused").compact_every_s == 0.5
        assert ReadingsSink("postgresql://unused", compact_every_s=2).compact_every_s == 2
    finally:
        get_settings.cache_clear()
