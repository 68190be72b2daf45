-- TimescaleDB flavour of 0001 (see ganzhi/db/timescaledb.py): raw readings as a
-- hypertable in daily chunks, compressed after 7 days (segments per site, device and
-- metric, newest first inside a segment: what the console's per-device queries read),
-- dropped after 400 days (`ganzhi maintain` sets the configured retention). No unique key:
-- the stream deduplicates per message in stream_messages (0014), as on plain PostgreSQL.
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE readings (
  time        timestamptz      NOT NULL,
  site_id     text             NOT NULL,
  device_id   text             NOT NULL,
  metric      text             NOT NULL,
  value       double precision NOT NULL,
  unit        text             NOT NULL,
  msg_id      uuid             NOT NULL,
  ingested_at timestamptz      NOT NULL DEFAULT now()
);
SELECT create_hypertable('readings', 'time', chunk_time_interval => interval '1 day');
ALTER TABLE readings SET (
  timescaledb.compress,
  timescaledb.compress_segmentby = 'site_id, device_id, metric',
  timescaledb.compress_orderby = 'time DESC'
);
SELECT add_compression_policy('readings', interval '7 days');
SELECT add_retention_policy('readings', interval '400 days');

CREATE INDEX readings_device_metric_time ON readings (device_id, metric, time DESC);

-- TimescaleDB makes and drops chunks itself: the plain flavour's partition functions,
-- which the stream worker and `ganzhi maintain` call on either flavour, do nothing here.
CREATE FUNCTION ganzhi_ensure_reading_partitions(from_ts timestamptz, to_ts timestamptz)
RETURNS integer LANGUAGE sql AS $$ SELECT 0 $$;

CREATE FUNCTION ganzhi_drop_reading_partitions(keep_days integer)
RETURNS integer LANGUAGE sql AS $$ SELECT 0 $$;
