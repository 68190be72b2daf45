-- Rollups off the hot path (issue 13). The stream sink used to merge each batch's minute
-- and hour aggregates into rollups_1m / rollups_1h with two upserts per batch (an index
-- probe and an in-place update per touched bucket: most of the sink's time). Now each
-- batch appends its minute aggregates to rollup_deltas with a binary COPY, in the same
-- transaction as its stream_messages ids and its readings, so a batch's rows and its
-- rollup contributions commit or vanish together. A compaction (stream/sinks/readings.py,
-- every few seconds and when a worker stops; one at a time across workers by
-- pg_advisory_xact_lock) moves the pending deltas into rollups_1m and rollups_1h in one
-- transaction: DELETE … RETURNING, GROUP BY bucket, one upsert per bucket with the same
-- merge as before (counts and sums add, min/max, last by greatest (last_time, last)).
--
-- Readers use rollups_1m_live / rollups_1h_live: the compacted rollups merged with the
-- deltas not yet compacted (what TimescaleDB calls real-time aggregation), so a reading is
-- in the rollups as soon as its batch commits. The views have the tables' columns except
-- updated_at.
--
-- Plain PostgreSQL and TimescaleDB alike: rollup_deltas is a short-lived queue (rows live
-- until the next compaction), not time-series storage, so it is a plain table on both —
-- no partitions, no hypertable, no retention policy — and rollups_1m / rollups_1h were
-- plain tables on both already. Nothing is pending when this runs (the sink before it
-- merged every batch into the rollups), so existing rollups need no conversion.
CREATE TABLE rollup_deltas (
  bucket    timestamptz      NOT NULL,  -- the minute
  site_id   text             NOT NULL,
  device_id text             NOT NULL,
  metric    text             NOT NULL,
  count     integer          NOT NULL,
  sum       double precision NOT NULL,
  min       double precision NOT NULL,
  max       double precision NOT NULL,
  last      double precision NOT NULL,
  last_time timestamptz      NOT NULL
);
-- No index: rows are appended by COPY and taken all at once by the compaction. Emptied
-- every few seconds, so vacuum it often (the freed pages are reused by the next COPYs).
ALTER TABLE rollup_deltas SET (
  autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000,
  autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 100000
);

-- The merge of several partial aggregates of one bucket (a bucket with nothing pending
-- shows its stored mean unchanged): "last" is the value with the
-- greatest (last_time, last), as in stream/sinks/rollups.merge. max() over a float8[]
-- pair compares element by element; the epoch (seconds, microsecond fraction) orders
-- timestamps exactly within the years any reading can carry.
CREATE VIEW rollups_1m_live AS
SELECT bucket, site_id, device_id, metric,
       sum(count)::integer AS count, min(min) AS min, max(max) AS max,
       CASE WHEN count(*) = 1 THEN min(mean) ELSE sum(sum) / sum(count) END AS mean,
       (max(ARRAY[date_part('epoch', last_time), last]))[2] AS last,
       max(last_time) AS last_time
FROM (
  SELECT bucket, site_id, device_id, metric, count, mean * count AS sum, mean, min, max,
         last, last_time
  FROM rollups_1m
  UNION ALL
  SELECT bucket, site_id, device_id, metric, count, sum, sum / count, min, max, last,
         last_time
  FROM rollup_deltas
) u
GROUP BY bucket, site_id, device_id, metric;

CREATE VIEW rollups_1h_live AS
SELECT bucket, site_id, device_id, metric,
       sum(count)::integer AS count, min(min) AS min, max(max) AS max,
       CASE WHEN count(*) = 1 THEN min(mean) ELSE sum(sum) / sum(count) END AS mean,
       (max(ARRAY[date_part('epoch', last_time), last]))[2] AS last,
       max(last_time) AS last_time
FROM (
  SELECT bucket, site_id, device_id, metric, count, mean * count AS sum, mean, min, max,
         last, last_time
  FROM rollups_1h
  UNION ALL
  SELECT date_trunc('hour', bucket, 'UTC'), site_id, device_id, metric, count, sum,
         sum / count, min, max, last, last_time
  FROM rollup_deltas
) u
GROUP BY bucket, site_id, device_id, metric;

-- The (site_id, bucket) indexes of 0002/0004 serve no query (the API reads one device's
-- buckets, by the primary key) and cost about a fifth of every compaction's upserts.
DROP INDEX IF EXISTS rollups_1m_site_bucket;
DROP INDEX IF EXISTS rollups_1h_site_bucket;
