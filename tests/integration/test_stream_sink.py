"""Readings sink against a real PostgreSQL: idempotent writes and recomputed rollups."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from stream.sinks.readings import ReadingRow, ReadingsSink

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 23, 59, 10, tzinfo=UTC)


def _rows(n: int, start: datetime = T0, device: str = "cs-1") -> list[ReadingRow]:
    return [
        ReadingRow(start + timedelta(seconds=10 * i), "site-a", device, "temperature",
                   float(i), "celsius", uuid.uuid4())
        for i in range(n)
    ]


def _rollups(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT bucket, site_id, device_id, metric, count, min, max, mean, last, last_time"
            " FROM rollups_1m ORDER BY device_id, bucket"
        ).fetchall()


async def test_write_is_idempotent_and_rollups_recompute(pg_dsn: str) -> None:
    sink = ReadingsSink(pg_dsn)
    try:
        rows = _rows(12)  # 23:59:10 .. 00:01:00, crosses a day (two partitions)
        first = await sink.write(rows)
        assert (first.inserted, first.duplicates) == (12, 0)
        rollups = _rollups(pg_dsn)
        assert [r[4] for r in rollups] == [5, 6, 1]
        b0 = rollups[0]
        assert b0[0] == datetime(2026, 3, 1, 23, 59, tzinfo=UTC)
        assert (b0[5], b0[6], b0[7], b0[8]) == (0.0, 4.0, 2.0, 4.0)
        assert b0[9] == T0 + timedelta(seconds=40)

        again = await sink.write(rows)  # a replay
        assert (again.inserted, again.duplicates) == (0, 12)
        assert _rollups(pg_dsn) == rollups

        # A late reading into the first minute, mixed with a replayed one.
        late = ReadingRow(T0 - timedelta(seconds=5), "site-a", "cs-1", "temperature", -3.0,
                          "celsius", uuid.uuid4())
        res = await sink.write([late, rows[0]])
        assert (res.inserted, res.duplicates) == (1, 1)
        b0 = _rollups(pg_dsn)[0]
        assert (b0[4], b0[5], b0[6], b0[8]) == (6, -3.0, 4.0, 4.0)

        with psycopg.connect(pg_dsn) as conn:
            count = conn.execute("SELECT count(*) FROM readings").fetchone()
        assert count == (13,)
    finally:
        await sink.close()


async def test_reconnects_after_connection_loss(pg_dsn: str) -> None:
    sink = ReadingsSink(pg_dsn)
    try:
        await sink.write(_rows(2))
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(psycopg.OperationalError):
            await sink.write(_rows(2, T0 + timedelta(hours=1)))
        res = await sink.write(_rows(2, T0 + timedelta(hours=1)))
        assert res.inserted == 2
    finally:
        await sink.close()


async def test_hourly_rollups_follow_the_minutes_and_late_data(pg_dsn: str) -> None:
    sink = ReadingsSink(pg_dsn)
    start = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    try:
        rows = _rows(360, start)  # one hour at 10 s: values 0..359
        await sink.write(rows[:200])
        await sink.write(rows[200:])
        await sink.write(rows)  # a replay changes nothing
        late = ReadingRow(start + timedelta(minutes=30, seconds=5), "site-a", "cs-1",
                          "temperature", 1000.0, "celsius", uuid.uuid4())
        await sink.write([late])
        with psycopg.connect(pg_dsn) as conn:
            hours = conn.execute(
                "SELECT bucket, count, min, max, mean, last FROM rollups_1h"
                " WHERE device_id = 'cs-1' ORDER BY bucket"
            ).fetchall()
            raw = conn.execute(
                "SELECT count(*), min(value), max(value), avg(value) FROM readings"
                " WHERE time >= %s AND time < %s", (start, start + timedelta(hours=1))
            ).fetchone()
        assert len(hours) == 1
        bucket, count, lo, hi, mean, last = hours[0]
        assert bucket == start
        assert raw is not None and (count, lo, hi) == (raw[0], raw[1], raw[2]) == (361, 0, 1000)
        assert mean == pytest.approx(raw[3])
        assert last == 359.0
    finally:
        await sink.close()


async def test_two_sites_with_the_same_device_id_never_mix(pg_dsn: str) -> None:
    """Rollups are keyed and joined by site as well as device: two sites' fridge-1."""
    sink = ReadingsSink(pg_dsn)
    try:
        start = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
        a = [ReadingRow(start + timedelta(seconds=10 * i), "site-a", "fridge-1", "temperature",
                        2.0, "celsius", uuid.uuid4()) for i in range(6)]
        b = [ReadingRow(start + timedelta(seconds=10 * i), "site-b", "fridge-1", "temperature",
                        9.0, "celsius", uuid.uuid4()) for i in range(6)]
        await sink.write(a)
        await sink.write(b)
        await sink.write(a[:3])  # a replay of one site recomputes its rows only
    finally:
        await sink.close()
    with psycopg.connect(pg_dsn) as conn:
        minute = conn.execute(
            "SELECT site_id, count, mean FROM rollups_1m ORDER BY site_id").fetchall()
        hour = conn.execute(
            "SELECT site_id, count, mean FROM rollups_1h ORDER BY site_id").fetchall()
    assert minute == [("site-a", 6, 2.0), ("site-b", 6, 9.0)]
    assert hour == [("site-a", 6, 2.0), ("site-b", 6, 9.0)]
