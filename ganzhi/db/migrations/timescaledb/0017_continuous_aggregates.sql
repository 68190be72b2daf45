-- TimescaleDB flavour: the one-minute and one-hour rollups are real-time continuous
-- aggregates over readings (materialized_only = false: buckets not yet materialized are
-- computed from readings at query time, so a reading shows as soon as it is stored), the
-- hour built on the minute (hierarchical). Readers keep reading rollups_1m_live and
-- rollups_1h_live, now views over the aggregates with the same columns. The stream
-- worker writes no rollups on this flavour: it finds no rollup_deltas table.
--
-- Refresh policies: every minute over the last 30 days for the minutes, every 15
-- minutes for the hours. A reading stored more than 30 days late (an edge box back after
-- a month) is in readings at once and in the rollups after a manual
-- CALL refresh_continuous_aggregate('rollups_1m_cagg', <from>, <to>) (docs/operations.md).
DROP VIEW rollups_1m_live;
DROP VIEW rollups_1h_live;
DROP TABLE rollup_deltas;
DROP TABLE rollups_1m;
DROP TABLE rollups_1h;

CREATE MATERIALIZED VIEW rollups_1m_cagg
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(interval '1 minute', time) AS bucket, site_id, device_id, metric,
       count(*)::integer AS count, min(value) AS min, max(value) AS max,
       avg(value) AS mean, last(value, time) AS last, max(time) AS last_time
FROM readings
GROUP BY time_bucket(interval '1 minute', time), site_id, device_id, metric
WITH NO DATA;

CREATE MATERIALIZED VIEW rollups_1h_cagg
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(interval '1 hour', bucket) AS bucket, site_id, device_id, metric,
       sum(count)::integer AS count, min(min) AS min, max(max) AS max,
       sum(mean * count) / sum(count) AS mean, last(last, last_time) AS last,
       max(last_time) AS last_time
FROM rollups_1m_cagg
GROUP BY time_bucket(interval '1 hour', bucket), site_id, device_id, metric
WITH NO DATA;

CREATE INDEX rollups_1m_cagg_device ON rollups_1m_cagg (device_id, metric, bucket DESC);
CREATE INDEX rollups_1h_cagg_device ON rollups_1h_cagg (device_id, metric, bucket DESC);

SELECT add_continuous_aggregate_policy('rollups_1m_cagg', start_offset => interval '30 days',
  end_offset => interval '1 minute', schedule_interval => interval '1 minute');
SELECT add_continuous_aggregate_policy('rollups_1h_cagg', start_offset => interval '30 days',
  end_offset => interval '1 hour', schedule_interval => interval '15 minutes');

CREATE VIEW rollups_1m_live AS
SELECT bucket, site_id, device_id, metric, count, min, max, mean, last, last_time
FROM rollups_1m_cagg;

CREATE VIEW rollups_1h_live AS
SELECT bucket, site_id, device_id, metric, count, min, max, mean, last, last_time
FROM rollups_1h_cagg;
