"""Readings sink against a real PostgreSQL: idempotent writes and recomputed rollups."""

from __future__ import annotations

import asyncio
import math
import random
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from prometheus_client import REGISTRY

from ganzhi.db.migrate import MIGRATIONS_DIR, migrate
from ganzhi.stack.infra import Managed, create_database
from stream.sinks.readings import COMPACTION_APP, ReadingRow, ReadingsSink

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 23, 59, 10, tzinfo=UTC)


def _sink(dsn: str) -> ReadingsSink:
    """A sink that compacts only when told (and on close): state compared exactly across
    writes cannot move by a compaction in between."""
    return ReadingsSink(dsn, compact_every_s=math.inf, compact_rows=0)


async def _write(sink: ReadingsSink, rows: list[ReadingRow]) -> None:
    """A batch, then the compaction it started in the background (if any) to its end."""
    await sink.write(rows)
    await sink.wait_compaction()


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
            " FROM rollups_1m_live ORDER BY device_id, bucket"
        ).fetchall()


async def test_write_is_idempotent_and_rollups_recompute(pg_dsn: str) -> None:
    sink = _sink(pg_dsn)
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
    sink = _sink(pg_dsn)
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
    sink = _sink(pg_dsn)
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
                "SELECT bucket, count, min, max, mean, last FROM rollups_1h_live"
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
    sink = _sink(pg_dsn)
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
            "SELECT site_id, count, mean FROM rollups_1m_live ORDER BY site_id").fetchall()
        hour = conn.execute(
            "SELECT site_id, count, mean FROM rollups_1h_live ORDER BY site_id").fetchall()
    assert minute == [("site-a", 6, 2.0), ("site-b", 6, 9.0)]
    assert hour == [("site-a", 6, 2.0), ("site-b", 6, 9.0)]


# --- idempotence per message, rollups merged in the worker (issue 13) ---------------------

def _state(dsn: str) -> tuple[list[tuple[object, ...]], ...]:
    with psycopg.connect(dsn) as conn:
        return tuple(
            conn.execute(q).fetchall() for q in (
                "SELECT time, site_id, device_id, metric, value, msg_id FROM readings"
                " ORDER BY msg_id, metric, time",
                "SELECT msg_id, time FROM stream_messages ORDER BY msg_id",
                "SELECT bucket, site_id, device_id, metric, count, min, max, mean, last,"
                " last_time FROM rollups_1m_live ORDER BY site_id, device_id, metric, bucket",
                "SELECT bucket, site_id, device_id, metric, count, min, max, mean, last,"
                " last_time FROM rollups_1h_live ORDER BY site_id, device_id, metric, bucket",
            )
        )


def _message(msg_id: uuid.UUID, t: datetime, values: list[float], device: str = "cs-1",
             site: str = "site-a") -> list[ReadingRow]:
    """One message of several readings (temperature and humidity, 10 s apart)."""
    return [
        ReadingRow(t + timedelta(seconds=10 * (i // 2)), site, device,
                   "temperature" if i % 2 == 0 else "humidity", v, "unit", msg_id)
        for i, v in enumerate(values)
    ]


async def test_replay_of_a_batch_changes_nothing(pg_dsn: str) -> None:
    sink = _sink(pg_dsn)
    try:
        batch = [row for k in range(5)
                 for row in _message(uuid.uuid4(), T0 + timedelta(seconds=30 * k),
                                     [float(k), k + 0.5, k + 1.0, k + 1.5])]
        first = await sink.write(batch)
        assert (first.inserted, first.duplicates) == (20, 0)
        before = _state(pg_dsn)
        again = await sink.write(batch)
        assert (again.inserted, again.duplicates) == (0, 20)
        assert _state(pg_dsn) == before
    finally:
        await sink.close()


async def test_a_redelivered_message_in_a_later_batch_changes_nothing(pg_dsn: str) -> None:
    """Same msg_id, republished after a lost PUBACK: a later batch, another Kafka offset."""
    sink = _sink(pg_dsn)
    try:
        m1 = _message(uuid.uuid4(), T0, [1.0, 10.0, 2.0, 20.0])
        m2 = _message(uuid.uuid4(), T0 + timedelta(seconds=20), [3.0, 30.0])
        await sink.write(m1 + m2)
        before = _state(pg_dsn)
        m3 = _message(uuid.uuid4(), T0 + timedelta(minutes=5), [4.0])
        res = await sink.write(m2 + m3 + m1)
        assert (res.inserted, res.duplicates) == (1, 6)
        after = _state(pg_dsn)
        assert len(after[0]) == len(before[0]) + 1
        without_m3 = tuple(
            [r for r in table if m3[0].msg_id not in r and T0 + timedelta(minutes=5) not in r]
            for table in after)
        assert without_m3[0] == before[0] and without_m3[1] == before[1]
        assert without_m3[2] == before[2]  # m3's minute is a new row; the others unchanged
        # Two copies of one message in the same batch count once.
        m4 = _message(uuid.uuid4(), T0 + timedelta(minutes=7), [5.0, 50.0])
        res = await sink.write(m4 + m4)
        assert (res.inserted, res.duplicates) == (2, 2)
        with psycopg.connect(pg_dsn) as conn:
            row = conn.execute(
                "SELECT count, mean FROM rollups_1m_live WHERE metric = 'temperature'"
                " AND bucket = %s", (T0.replace(second=0) + timedelta(minutes=7),)).fetchone()
        assert row == (1, 5.0)
    finally:
        await sink.close()


async def test_late_and_out_of_order_readings_merge_into_the_rollups(pg_dsn: str) -> None:
    sink = _sink(pg_dsn)
    start = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    try:
        def one(sec: int, value: float) -> list[ReadingRow]:
            return [ReadingRow(start + timedelta(seconds=sec), "site-a", "cs-1",
                               "temperature", value, "celsius", uuid.uuid4())]
        await sink.write(one(50, 5.0) + one(30, 3.0))  # out of order within a batch
        await sink.write(one(10, 1.0))  # late: earlier than all stored, not the last
        await sink.write(one(3600 - 1, 9.0))  # the hour's last minute
        await sink.write(one(20, 20.0))  # late again, a new max but not the last
        with psycopg.connect(pg_dsn) as conn:
            minute = conn.execute(
                "SELECT count, min, max, mean, last, last_time FROM rollups_1m_live"
                " WHERE bucket = %s", (start,)).fetchone()
            hour = conn.execute(
                "SELECT count, min, max, mean, last, last_time FROM rollups_1h_live").fetchall()
        assert minute == (4, 1.0, 20.0, pytest.approx(29.0 / 4), 5.0,
                          start + timedelta(seconds=50))
        assert hour == [(5, 1.0, 20.0, pytest.approx(38.0 / 5), 9.0,
                         start + timedelta(seconds=3599))]
    finally:
        await sink.close()


_WIDTH = {"1m": "minute", "1h": "hour"}


def _off_group_by(conn: psycopg.Connection[tuple[object, ...]], relation: str) -> int:
    """Rows of ``relation`` (a rollup table or live view) that differ from a GROUP BY over
    ``readings``, or that either side lacks."""
    width = _WIDTH[relation.split("_")[1]]
    row = conn.execute(
        f"WITH g AS (SELECT date_trunc('{width}', time AT TIME ZONE 'UTC')"
        "   AT TIME ZONE 'UTC' AS bucket, site_id, device_id, metric, count(*) AS count,"
        "   min(value) AS min, max(value) AS max, avg(value) AS mean,"
        "   (array_agg(value ORDER BY time DESC, value DESC))[1] AS last,"
        "   max(time) AS last_time FROM readings GROUP BY 1, 2, 3, 4)"
        f" SELECT count(*) FROM g FULL JOIN {relation} r"
        "   USING (bucket, site_id, device_id, metric)"
        " WHERE g.count IS DISTINCT FROM r.count OR g.min IS DISTINCT FROM r.min"
        "   OR g.max IS DISTINCT FROM r.max OR g.last IS DISTINCT FROM r.last"
        "   OR g.last_time IS DISTINCT FROM r.last_time"
        "   OR NOT abs(g.mean - r.mean) <= 1e-9 * greatest(1, abs(g.mean))"
    ).fetchone()
    assert row is not None and isinstance(row[0], int)
    return row[0]


def _scalar(dsn: str, sql: str) -> object:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def _random_messages(rnd: random.Random, n: int) -> list[list[ReadingRow]]:
    start = datetime(2026, 3, 2, 7, 50, tzinfo=UTC)
    messages = []
    for _ in range(n):
        t = start + timedelta(seconds=rnd.randrange(0, 3 * 3600))
        values = [round(rnd.uniform(-20, 40), 1) for _ in range(rnd.choice([1, 2, 4, 10]))]
        messages.append(_message(uuid.uuid4(), t, values, device=rnd.choice(["d1", "d2"]),
                                 site=rnd.choice(["site-a", "site-b"])))
    return messages


async def test_rollups_equal_a_group_by_after_random_batches_with_duplicates(
    pg_dsn: str,
) -> None:
    """Random batches (replays, redeliveries, late readings, two copies of one message)
    with compactions at random points: the live views equal a GROUP BY over the readings
    all along, and the rollup tables do once everything is compacted."""
    rnd = random.Random(13)
    messages = _random_messages(rnd, 150)
    sink = _sink(pg_dsn)
    try:
        stored: set[uuid.UUID] = set()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            while len(stored) < len(messages):
                # A batch: some new messages, some already stored (replays,
                # redeliveries), in any order, sometimes two copies of one.
                batch = rnd.sample(messages, rnd.randint(1, 12))
                batch += rnd.choices(batch, k=rnd.randint(0, 2))
                rows = [row for m in batch for row in m]
                new = {m[0].msg_id for m in batch} - stored
                res = await sink.write(rows)
                assert res.inserted == sum(len(m) for m in messages if m[0].msg_id in new)
                stored |= new
                if rnd.random() < 0.2:
                    # Everything, or the minutes settled by some moment of the data,
                    # the later ones collapsed or not.
                    await sink.compact(upto=rnd.choice([None, datetime(
                        2026, 3, 2, 7, 50, tzinfo=UTC) + timedelta(
                        seconds=rnd.randrange(0, 3 * 3600))]), collapse=rnd.random() < 0.5)
                if rnd.random() < 0.2:
                    assert _off_group_by(conn, "rollups_1m_live") == 0
                    assert _off_group_by(conn, "rollups_1h_live") == 0
            assert _scalar(pg_dsn, "SELECT count(*) FROM rollup_deltas") != 0
            for view in ("rollups_1m_live", "rollups_1h_live"):
                assert _off_group_by(conn, view) == 0, view
    finally:
        await sink.close()  # compacts what is left
    assert _scalar(pg_dsn, "SELECT count(*) FROM rollup_deltas") == 0
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (
            sum(len(m) for m in messages),)
        for relation in ("rollups_1m", "rollups_1h", "rollups_1m_live", "rollups_1h_live"):
            assert _off_group_by(conn, relation) == 0, relation
            total = conn.execute(f"SELECT count(*) FROM {relation}").fetchone()
            assert total is not None and total[0] > 20


async def test_migration_0014_keeps_stored_messages_deduplicated(
    pg_server: Managed, tmp_path: Path
) -> None:
    """Readings stored before 0014 get their message ids; a replay of them stays a no-op,
    also once 0019 has rebuilt the key of every day's partition with the time first."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    create_database(pg_server.extra["admin_dsn"], name)
    dsn = pg_server.extra["admin_dsn"].rsplit("/", 1)[0] + f"/{name}"
    before = tmp_path / "migrations"
    before.mkdir()
    for f in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if f.name < "0014":
            shutil.copy(f, before / f.name)
    migrate(dsn, before)
    old = _message(uuid.uuid4(), T0, [1.0, 10.0, 3.0, 30.0])  # crosses midnight: 2 days
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT ganzhi_ensure_reading_partitions(%s, %s)",
                     (T0, T0 + timedelta(days=1)))
        for r in old:
            conn.execute(
                "INSERT INTO readings (time, site_id, device_id, metric, value, unit, msg_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (r.time, r.site_id, r.device_id, r.metric, r.value, r.unit, r.msg_id))
        conn.execute(
            "INSERT INTO rollups_1m (bucket, site_id, device_id, metric, count, min, max,"
            " mean, last, last_time) SELECT date_trunc('minute', time), site_id, device_id,"
            " metric, count(*), min(value), max(value), avg(value), max(value), max(time)"
            " FROM readings GROUP BY 1, 2, 3, 4")
    assert "0014_message_dedupe.sql" in migrate(dsn)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT msg_id, time FROM stream_messages").fetchall() == [
            (old[0].msg_id, T0)]
        parts = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'stream_messages'::regclass"
        ).fetchone()
        assert parts is not None and parts[0] >= 2
        keys = conn.execute(
            "SELECT i.indrelid::regclass::text, array_agg(a.attname::text ORDER BY k.n)"
            " FROM pg_index i CROSS JOIN unnest(i.indkey) WITH ORDINALITY k(attnum, n)"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
            " WHERE i.indisprimary AND i.indrelid::regclass::text LIKE 'stream_messages%%'"
            " GROUP BY 1").fetchall()
        assert len(keys) == parts[0] + 1  # the parent and each partition
        assert {tuple(cols) for _, cols in keys} == {("time", "msg_id")}
    state = _state(dsn)
    sink = _sink(dsn)
    try:
        res = await sink.write(old)
        assert (res.inserted, res.duplicates) == (0, 4)
        assert _state(dsn) == state
        res = await sink.write(_message(uuid.uuid4(), T0, [2.0]))
        assert res.inserted == 1
    finally:
        await sink.close()
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count, mean FROM rollups_1m WHERE bucket = %s"
                           " AND metric = 'temperature'", (T0.replace(second=0),)).fetchone()
    assert row == (3, 2.0)  # 1.0 and 3.0 stored before 0014, 2.0 after


# --- the rollup delta log and its compaction (0015) ---------------------------------------


async def test_replay_and_late_data_after_a_compaction(pg_dsn: str) -> None:
    """A replay after the compaction adds no delta; a late reading lands in its (already
    compacted) bucket; the tables and the live views agree with a GROUP BY throughout."""
    start = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    sink = _sink(pg_dsn)
    try:
        rows = _rows(30, start)  # 08:00:00 .. 08:04:50
        assert (await sink.write(rows)).rollups == 5
        assert _scalar(pg_dsn, "SELECT count(*) FROM rollup_deltas") == 5
        res = await sink.compact()
        assert (res.deltas, res.minutes, res.hours) == (5, 5, 1)
        assert _scalar(pg_dsn, "SELECT count(*) FROM rollup_deltas") == 0
        compacted = _rollups(pg_dsn)
        again = await sink.write(rows)
        assert (again.inserted, again.rollups) == (0, 0)
        assert _scalar(pg_dsn, "SELECT count(*) FROM rollup_deltas") == 0
        assert (await sink.compact()).deltas == 0
        assert _rollups(pg_dsn) == compacted
        late = ReadingRow(start + timedelta(seconds=5), "site-a", "cs-1", "temperature",
                          -7.0, "celsius", uuid.uuid4())
        await sink.write([late])
        with psycopg.connect(pg_dsn) as conn:
            for relation in ("rollups_1m", "rollups_1h"):
                assert _off_group_by(conn, relation) != 0  # not compacted yet ...
                assert _off_group_by(conn, f"{relation}_live") == 0  # ... but seen live
        await sink.compact()
        with psycopg.connect(pg_dsn) as conn:
            for relation in ("rollups_1m", "rollups_1h", "rollups_1m_live", "rollups_1h_live"):
                assert _off_group_by(conn, relation) == 0, relation
            assert conn.execute(
                "SELECT count, min, last FROM rollups_1m WHERE bucket = %s", (start,)
            ).fetchone() == (7, -7.0, 5.0)
    finally:
        await sink.close()


async def test_a_batch_that_fails_midway_leaves_nothing(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readings COPYed, then the delta step fails: message ids, readings and deltas all
    roll back, so the batch coming again stores everything once."""
    import stream.sinks.readings as readings_mod

    sink = _sink(pg_dsn)
    rows = _rows(6, datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    try:
        def boom(_rows: object) -> object:
            raise psycopg.errors.QueryCanceled("killed between readings and deltas")

        monkeypatch.setattr(readings_mod, "aggregate_minutes", boom)
        with pytest.raises(psycopg.errors.QueryCanceled):
            await sink.write(rows)
        for table in ("readings", "stream_messages", "rollup_deltas"):
            assert _scalar(pg_dsn, f"SELECT count(*) FROM {table}") == 0, table
        monkeypatch.undo()
        assert (await sink.write(rows)).inserted == 6
    finally:
        await sink.close()
    with psycopg.connect(pg_dsn) as conn:
        assert _off_group_by(conn, "rollups_1m") == 0


async def test_a_worker_killed_before_compacting_loses_and_doubles_nothing(
    pg_dsn: str,
) -> None:
    """The worker's connection is killed after some batches and before any compaction:
    the committed batches' deltas survive; another worker replays the batches (Kafka
    offsets not committed) and compacts: rollups exactly the GROUP BY over readings."""
    rnd = random.Random(7)
    messages = _random_messages(rnd, 60)
    sink = _sink(pg_dsn)
    for k in range(0, 40, 8):
        await sink.write([row for m in messages[k:k + 8] for row in m])
    deltas = _scalar(pg_dsn, "SELECT count(*) FROM rollup_deltas")
    assert isinstance(deltas, int) and deltas > 0
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()")
    await sink.close(compact=False)  # killed: nothing is compacted
    assert _scalar(pg_dsn, "SELECT count(*) FROM rollups_1m") == 0
    assert _scalar(pg_dsn, "SELECT count(*) FROM rollup_deltas") == deltas
    other = _sink(pg_dsn)
    try:
        for k in range(24, 60, 6):  # from an older offset: some batches come again
            res = await other.write([row for m in messages[k:k + 6] for row in m])
            assert res.duplicates == sum(len(m) for m in messages[k:min(k + 6, 40)])
        with psycopg.connect(pg_dsn) as conn:
            assert _off_group_by(conn, "rollups_1m_live") == 0
        await other.compact()
    finally:
        await other.close()
    with psycopg.connect(pg_dsn) as conn:
        for relation in ("rollups_1m", "rollups_1h"):
            assert _off_group_by(conn, relation) == 0, relation
        assert conn.execute("SELECT count(*) FROM rollup_deltas").fetchone() == (0,)


async def test_concurrent_workers_and_compactions_are_exact(pg_dsn: str) -> None:
    """Two workers write and compact at the same time (the advisory lock serialises the
    compactions; a try that finds it taken skips): every delta is merged exactly once."""
    rnd = random.Random(11)
    messages = _random_messages(rnd, 200)
    a, b = _sink(pg_dsn), _sink(pg_dsn)

    written: list[int] = []

    async def worker(sink: ReadingsSink, mine: list[list[ReadingRow]]) -> int:
        moved = 0
        for k in range(0, len(mine), 5):
            written.append((await sink.write([row for m in mine[k:k + 5] for row in m])).rollups)
            moved += (await sink.compact(wait=k % 2 == 0)).deltas
        return moved

    try:
        moved = await asyncio.gather(worker(a, messages[::2]), worker(b, messages[1::2]))
        # Two compactions at once: one waits for the other; together they take the rest.
        rest = await asyncio.gather(a.compact(), b.compact())
        assert sum(moved) + sum(r.deltas for r in rest) == sum(written)
    finally:
        await a.close()
        await b.close()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM rollup_deltas").fetchone() == (0,)
        for relation in ("rollups_1m", "rollups_1h", "rollups_1m_live", "rollups_1h_live"):
            assert _off_group_by(conn, relation) == 0, relation


async def test_two_compactions_at_once_take_each_delta_once(pg_dsn: str) -> None:
    rnd = random.Random(5)
    messages = _random_messages(rnd, 80)
    writer = _sink(pg_dsn)
    try:
        for k in range(0, 80, 10):
            await writer.write([row for m in messages[k:k + 10] for row in m])
    finally:
        await writer.close(compact=False)
    pending = _scalar(pg_dsn, "SELECT count(*) FROM rollup_deltas")
    a, b = _sink(pg_dsn), _sink(pg_dsn)
    try:
        ra, rb = await asyncio.gather(a.compact(), b.compact())
        assert ra.deltas + rb.deltas == pending
        assert 0 in (ra.deltas, rb.deltas)  # the second found nothing left
    finally:
        await a.close()
        await b.close()
    with psycopg.connect(pg_dsn) as conn:
        for relation in ("rollups_1m", "rollups_1h"):
            assert _off_group_by(conn, relation) == 0, relation


async def test_130_random_batches_then_one_compaction_equal_a_group_by(pg_dsn: str) -> None:
    rnd = random.Random(130)
    messages = _random_messages(rnd, 400)
    sink = _sink(pg_dsn)
    try:
        for _ in range(130):
            batch = rnd.sample(messages, rnd.randint(1, 8))
            await sink.write([row for m in batch for row in m])
        with psycopg.connect(pg_dsn) as conn:
            before = {r: _off_group_by(conn, r) for r in ("rollups_1m_live", "rollups_1h_live")}
        res = await sink.compact()
        assert res.deltas > 130
    finally:
        await sink.close()
    assert before == {"rollups_1m_live": 0, "rollups_1h_live": 0}
    with psycopg.connect(pg_dsn) as conn:
        for relation in ("rollups_1m", "rollups_1h", "rollups_1m_live", "rollups_1h_live"):
            assert _off_group_by(conn, relation) == 0, relation


async def test_compaction_runs_at_its_interval(pg_dsn: str) -> None:
    every = ReadingsSink(pg_dsn, compact_every_s=0)
    never = ReadingsSink(pg_dsn, compact_every_s=math.inf)
    start = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    try:
        await never.write(_rows(6, start, device="d-never"))
        assert _scalar(pg_dsn, "SELECT count(*) FROM rollup_deltas") == 1
        await _write(every, _rows(6, start, device="d-every"))  # both workers' deltas
        assert _scalar(pg_dsn, "SELECT count(*) FROM rollup_deltas") == 0
        assert _scalar(pg_dsn, "SELECT count(*) FROM rollups_1m") == 2
    finally:
        await every.close()
        await never.close()
    assert ReadingsSink(pg_dsn).compact_every_s == 5.0  # stream.rollup_compact_s
    assert ReadingsSink(pg_dsn).settle_s == 15.0  # stream.rollup_settle_s
    assert ReadingsSink(pg_dsn).collapse_rows == 100_000  # stream.rollup_collapse_rows
    assert ReadingsSink(pg_dsn).compact_rows == 20_000  # stream.rollup_compact_rows


def _buckets(dsn: str, relation: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT bucket, count FROM {relation} ORDER BY bucket").fetchall()


async def test_periodic_compaction_leaves_open_minutes_to_settle(pg_dsn: str) -> None:
    """At real time a compaction after a write moves only minutes that ended settle_s
    ago: the open minute's deltas wait (readers see them through the live views), a late
    reading for a settled minute is merged into its row at the next compaction, and close
    moves the rest."""
    m0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    now = [(m0 + timedelta(seconds=50)).timestamp()]
    sink = ReadingsSink(pg_dsn, compact_every_s=0, settle_s=15, collapse_rows=0,
                        clock=lambda: now[0])
    try:
        await _write(sink, _rows(5, m0))  # 08:00:00-08:00:40, at 08:00:50
        assert _buckets(pg_dsn, "rollups_1m") == []
        assert _buckets(pg_dsn, "rollup_deltas") == [(m0, 5)]
        now[0] += 20  # 08:01:10: 08:00 ended 10 s ago, not yet settled
        await _write(sink, _rows(1, m0 + timedelta(seconds=60)))
        assert _buckets(pg_dsn, "rollups_1m") == []
        now[0] += 10  # 08:01:20: 08:00 has settled
        await _write(sink, _rows(1, m0 + timedelta(seconds=70)))
        assert _buckets(pg_dsn, "rollups_1m") == [(m0, 5)]
        # The open minute's two deltas, collapsed into one.
        assert _buckets(pg_dsn, "rollup_deltas") == [(m0 + timedelta(minutes=1), 2)]
        await _write(sink, _rows(1, m0 + timedelta(seconds=50)))  # late, for 08:00
        assert _buckets(pg_dsn, "rollups_1m") == [(m0, 6)]
        assert _buckets(pg_dsn, "rollups_1h") == [(m0, 6)]  # the hour: settled minutes
        with psycopg.connect(pg_dsn) as conn:
            for view in ("rollups_1m_live", "rollups_1h_live"):
                assert _off_group_by(conn, view) == 0, view
    finally:
        await sink.close()  # every pending delta, settled or not
    assert _buckets(pg_dsn, "rollup_deltas") == []
    assert _buckets(pg_dsn, "rollups_1m") == [(m0, 6), (m0 + timedelta(minutes=1), 2)]
    assert _buckets(pg_dsn, "rollups_1h") == [(m0, 8)]


async def test_open_minutes_deltas_collapse_when_a_series_piles_them_up(pg_dsn: str) -> None:
    """A series heard at every batch leaves a delta per batch in its open minute; once
    they reach collapse_rows, and twice the buckets, a compaction puts them back one per
    bucket. Series heard once each are left alone (collapsing would rewrite the same
    rows)."""
    m0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    now = [(m0 + timedelta(seconds=59)).timestamp()]
    sink = ReadingsSink(pg_dsn, compact_every_s=0, settle_s=15, collapse_rows=3,
                        clock=lambda: now[0])
    try:
        kept = []
        compact = sink.compact

        async def spy(**kw: object) -> object:
            res = await compact(**kw)  # type: ignore[arg-type]
            kept.append((kw.get("collapse", False), res.kept))
            return res

        sink.compact = spy  # type: ignore[method-assign,assignment]
        for i in range(4):
            await _write(sink, _rows(1, m0 + timedelta(seconds=10 * i), device="fast"))
        # collapse_rows=3: the third delta of the bucket collapses the three into one.
        assert kept == [(False, 0), (False, 0), (True, 1), (False, 0)]
        assert sorted(_buckets(pg_dsn, "rollup_deltas")) == [(m0, 1), (m0, 3)]
        assert _buckets(pg_dsn, "rollups_1m") == []
        kept.clear()
        for d in range(3):  # three series, one delta each: nothing to gain
            await _write(sink, _rows(1, m0 + timedelta(seconds=50), device=f"slow-{d}"))
        assert [c for c, _ in kept] == [False, False, False]
        with psycopg.connect(pg_dsn) as conn:
            for view in ("rollups_1m_live", "rollups_1h_live"):
                assert _off_group_by(conn, view) == 0, view
        now[0] += 30  # 08:01:29: the minute has settled
        await _write(sink, _rows(1, m0 + timedelta(seconds=80), device="fast"))
        assert sorted(_buckets(pg_dsn, "rollups_1m")) == [(m0, 1), (m0, 1), (m0, 1), (m0, 4)]
    finally:
        await sink.close()
    with psycopg.connect(pg_dsn) as conn:
        for relation in ("rollups_1m", "rollups_1h"):
            assert _off_group_by(conn, relation) == 0, relation


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_a_failing_compaction_keeps_the_batch_and_its_deltas(pg_dsn: str) -> None:
    """A compaction that fails is counted and logged; the batch it followed is stored,
    its deltas wait, and the next compaction after the fault takes them."""
    sink = ReadingsSink(pg_dsn, compact_every_s=0, settle_s=-math.inf)
    failures = _metric("ganzhi_stream_rollup_compaction_failures_total")
    moved = _metric("ganzhi_stream_rollup_deltas_compacted_total")
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE rollups_1h RENAME TO rollups_1h_away")
            try:
                res = await sink.write(_rows(3))
                await sink.wait_compaction()
            finally:
                conn.execute("ALTER TABLE rollups_1h_away RENAME TO rollups_1h")
        assert res.inserted == 3
        assert _metric("ganzhi_stream_rollup_compaction_failures_total") == failures + 1
        assert _scalar(pg_dsn, "SELECT count(*) FROM rollup_deltas") == 1
        await _write(sink, _rows(1, T0 + timedelta(minutes=5)))
        assert _scalar(pg_dsn, "SELECT count(*) FROM rollup_deltas") == 0
        assert _metric("ganzhi_stream_rollup_deltas_compacted_total") == moved + 2
        with psycopg.connect(pg_dsn) as conn:
            assert _off_group_by(conn, "rollups_1m") == 0
            assert _off_group_by(conn, "rollups_1h") == 0
    finally:
        await sink.close()


def _compaction_backends(conn: psycopg.Connection[tuple[object, ...]]) -> list[int]:
    rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                        (COMPACTION_APP,)).fetchall()
    return [int(str(r[0])) for r in rows]


async def _compaction_waits_on_a_lock(dsn: str) -> bool:
    """Whether the compaction's backend comes to wait on a lock within 10 s (polled with
    the event loop free, so that the background compaction can go on to its statement)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(200):
            row = conn.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE application_name = %s",
                (COMPACTION_APP,)).fetchone()
            if row == ("Lock",):
                return True
            await asyncio.sleep(0.05)
    return False


async def test_batches_are_written_while_a_compaction_waits(pg_dsn: str) -> None:
    """A compaction runs in the background on its own connection: while one is held up
    (here by a lock on rollups_1h), the next batches are stored and no second compaction
    starts; once it goes on, the rollups equal a GROUP BY over the readings."""
    sink = ReadingsSink(pg_dsn, compact_every_s=0, settle_s=-math.inf)
    messages = _random_messages(random.Random(3), 30)
    try:
        with psycopg.connect(pg_dsn) as blocker:
            blocker.execute("LOCK TABLE rollups_1h IN EXCLUSIVE MODE")
            await asyncio.wait_for(sink.write([row for m in messages[:10] for row in m]), 10)
            assert await _compaction_waits_on_a_lock(pg_dsn)
            for k in (10, 20):  # each returns while the compaction waits for the lock
                res = await asyncio.wait_for(
                    sink.write([row for m in messages[k:k + 10] for row in m]), 10)
                assert res.inserted == sum(len(m) for m in messages[k:k + 10])
            assert await _compaction_waits_on_a_lock(pg_dsn)  # the same one, still
            with psycopg.connect(pg_dsn) as conn:
                assert len(_compaction_backends(conn)) == 1
                assert _off_group_by(conn, "rollups_1m_live") == 0  # nothing moved yet
            blocker.rollback()
        await sink.wait_compaction()
    finally:
        await sink.close()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM rollup_deltas").fetchone() == (0,)
        for relation in ("rollups_1m", "rollups_1h"):
            assert _off_group_by(conn, relation) == 0, relation


async def test_a_compaction_starts_once_compact_rows_deltas_are_written(pg_dsn: str) -> None:
    m0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    sink = ReadingsSink(pg_dsn, compact_every_s=math.inf, settle_s=-math.inf,
                        compact_rows=3)
    try:
        await _write(sink, _rows(1, m0, device="a") + _rows(1, m0, device="b"))
        assert _scalar(pg_dsn, "SELECT count(*) FROM rollup_deltas") == 2
        await _write(sink, _rows(1, m0, device="c"))  # the third delta row since the start
        assert _scalar(pg_dsn, "SELECT count(*) FROM rollup_deltas") == 0
        assert _scalar(pg_dsn, "SELECT count(*) FROM rollups_1m") == 3
        await _write(sink, _rows(1, m0 + timedelta(minutes=1), device="a"))
        assert _scalar(pg_dsn, "SELECT count(*) FROM rollup_deltas") == 1  # counted anew
    finally:
        await sink.close()


async def test_a_compaction_killed_midway_is_taken_up_by_the_next(pg_dsn: str) -> None:
    """The compaction's backend is killed while it waits: its transaction (deltas deleted,
    rollups upserted) rolls back, the failure is counted, the batches stay stored, and the
    next compaction reconnects and moves every delta once."""
    sink = ReadingsSink(pg_dsn, compact_every_s=0, settle_s=-math.inf)
    messages = _random_messages(random.Random(4), 20)
    failures = _metric("ganzhi_stream_rollup_compaction_failures_total")
    try:
        with psycopg.connect(pg_dsn) as blocker:
            blocker.execute("LOCK TABLE rollups_1h IN EXCLUSIVE MODE")
            await sink.write([row for m in messages[:10] for row in m])
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                for _ in range(100):
                    if _compaction_backends(conn):
                        break
                    await asyncio.sleep(0.05)
                (pid,) = _compaction_backends(conn)
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            await sink.wait_compaction()
            blocker.rollback()
        assert _metric("ganzhi_stream_rollup_compaction_failures_total") == failures + 1
        pending = _scalar(pg_dsn, "SELECT count(*) FROM rollup_deltas")
        assert isinstance(pending, int) and pending > 0
        assert _scalar(pg_dsn, "SELECT count(*) FROM rollups_1m") == 0
        await _write(sink, [row for m in messages[10:] for row in m])
        assert _scalar(pg_dsn, "SELECT count(*) FROM rollup_deltas") == 0
    finally:
        await sink.close()
    with psycopg.connect(pg_dsn) as conn:
        for relation in ("rollups_1m", "rollups_1h"):
            assert _off_group_by(conn, relation) == 0, relation


def test_settled_is_the_last_minute_that_ended_settle_s_ago() -> None:
    sink = ReadingsSink("postgresql://unused", compact_every_s=5, settle_s=15)
    at = datetime(2026, 3, 2, 8, 1, 20, tzinfo=UTC).timestamp()
    assert sink.settled(at) == datetime(2026, 3, 2, 8, 0, 5, tzinfo=UTC)
    sink.settle_s = -math.inf
    assert sink.settled(at) is None


async def test_migration_0015_on_a_database_with_rollups(
    pg_server: Managed, tmp_path: Path
) -> None:
    """Rollups stored before 0015 show in the live views and take the deltas after it."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    create_database(pg_server.extra["admin_dsn"], name)
    dsn = pg_server.extra["admin_dsn"].rsplit("/", 1)[0] + f"/{name}"
    before = tmp_path / "migrations"
    before.mkdir()
    for f in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if f.name < "0015":
            shutil.copy(f, before / f.name)
    migrate(dsn, before)
    start = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    old = _rows(12, start)
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT ganzhi_ensure_reading_partitions(%s, %s)", (start, start))
        for r in old:
            conn.execute(
                "INSERT INTO readings (time, site_id, device_id, metric, value, unit, msg_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (r.time, r.site_id, r.device_id, r.metric, r.value, r.unit, r.msg_id))
            conn.execute("INSERT INTO stream_messages (msg_id, time) VALUES (%s, %s)",
                         (r.msg_id, r.time))
        for table, width in (("rollups_1m", "minute"), ("rollups_1h", "hour")):
            conn.execute(
                f"INSERT INTO {table} (bucket, site_id, device_id, metric, count, min, max,"
                f" mean, last, last_time) SELECT date_trunc('{width}', time, 'UTC'), site_id,"
                " device_id, metric, count(*), min(value), max(value), avg(value),"
                " (array_agg(value ORDER BY time DESC))[1], max(time)"
                " FROM readings GROUP BY 1, 2, 3, 4")
    assert migrate(dsn)[0] == "0015_rollup_deltas.sql"
    with psycopg.connect(dsn) as conn:
        for relation in ("rollups_1m", "rollups_1h", "rollups_1m_live", "rollups_1h_live"):
            assert _off_group_by(conn, relation) == 0, relation
        assert conn.execute("SELECT count(*) FROM rollup_deltas").fetchone() == (0,)
    sink = _sink(dsn)
    try:
        assert (await sink.write(old)).inserted == 0  # stored before: a replay
        assert (await sink.write(_rows(12, start + timedelta(seconds=5)))).inserted == 12
        with psycopg.connect(dsn) as conn:
            assert _off_group_by(conn, "rollups_1m_live") == 0
    finally:
        await sink.close()
    with psycopg.connect(dsn) as conn:
        for relation in ("rollups_1m", "rollups_1h", "rollups_1m_live", "rollups_1h_live"):
            assert _off_group_by(conn, relation) == 0, relation
