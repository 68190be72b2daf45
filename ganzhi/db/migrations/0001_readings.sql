-- Raw readings: one row per (message, metric, sample time), idempotent on that key.
-- A table partitioned by day (native range partitions), created on demand by
-- ganzhi_ensure_reading_partitions() and dropped by ganzhi_drop_reading_partitions().
-- The TimescaleDB flavour has its own variant: timescaledb/0001_readings.sql.
CREATE TABLE readings (
  time        timestamptz      NOT NULL,
  site_id     text             NOT NULL,
  device_id   text             NOT NULL,
  metric      text             NOT NULL,
  value       double precision NOT NULL,
  unit        text             NOT NULL,
  msg_id      uuid             NOT NULL,
  ingested_at timestamptz      NOT NULL DEFAULT now(),
  PRIMARY KEY (msg_id, metric, time)
) PARTITION BY RANGE (time);

CREATE INDEX readings_device_metric_time ON readings (device_id, metric, time DESC);

-- Creates the daily partitions covering [from_ts, to_ts] on plain PostgreSQL; a no-op
-- on a hypertable (TimescaleDB makes chunks itself).
CREATE FUNCTION ganzhi_ensure_reading_partitions(from_ts timestamptz, to_ts timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  day date := (from_ts AT TIME ZONE 'UTC')::date;
  created integer := 0;
  part text;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'readings'::regclass) THEN
    RETURN 0;
  END IF;
  WHILE day <= (to_ts AT TIME ZONE 'UTC')::date LOOP
    part := 'readings_' || to_char(day, 'YYYYMMDD');
    IF to_regclass(part) IS NULL THEN
      -- Two writers may race here; the loser's error is caught and ignored.
      BEGIN
        EXECUTE format(
          'CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
          part, (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
        created := created + 1;
      EXCEPTION WHEN duplicate_table OR invalid_object_definition THEN
        NULL;
      END;
    END IF;
    day := day + 1;
  END LOOP;
  RETURN created;
END
$$;

-- Retention on plain PostgreSQL: drops daily partitions wholly older than keep_days.
CREATE FUNCTION ganzhi_drop_reading_partitions(keep_days integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  part record;
  dropped integer := 0;
  cutoff date := (now() AT TIME ZONE 'UTC')::date - keep_days;
BEGIN
  FOR part IN
    SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'readings'::regclass AND c.relname ~ '^readings_[0-9]{8}$'
  LOOP
    IF to_date(substr(part.relname, 10), 'YYYYMMDD') < cutoff THEN
      EXECUTE format('DROP TABLE %I', part.relname);
      dropped := dropped + 1;
    END IF;
  END LOOP;
  RETURN dropped;
END
$$;
