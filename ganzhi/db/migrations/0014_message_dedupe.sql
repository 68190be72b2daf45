-- Idempotence per message, not per reading (issue 13). The stream sink used to insert
-- every reading with ON CONFLICT DO NOTHING on (msg_id, metric, time): one unique-index
-- probe per reading, the largest cost of the write path. Now each batch records its
-- messages in stream_messages (msg_id, time) with ON CONFLICT DO NOTHING RETURNING, and
-- only the readings of messages new there are COPYed into readings — a replayed Kafka
-- record and a redelivered MQTT message (same msg_id, other offset) find their msg_id
-- taken. `time` is the earliest reading time of the message (the same for every copy of
-- it), so the table is partitioned and retained like readings (unique keys on a
-- partitioned table or a hypertable must include the time column). The TimescaleDB
-- flavour has its own variant: timescaledb/0014_message_dedupe.sql.
--
-- Rollups are no longer recomputed from readings: the worker aggregates each batch's new
-- readings per bucket and merges them into rollups_1m / rollups_1h (count added, min/max,
-- mean weighted by count, last by greatest (last_time, last)). Their columns are unchanged.
CREATE TABLE stream_messages (
  msg_id uuid        NOT NULL,
  time   timestamptz NOT NULL,
  PRIMARY KEY (msg_id, time)
) PARTITION BY RANGE (time);

-- One partition per existing readings partition.
DO $$
DECLARE
  part record;
  day date;
BEGIN
  FOR part IN
    SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'readings'::regclass AND c.relname ~ '^readings_[0-9]{8}$'
  LOOP
    day := to_date(substr(part.relname, 10), 'YYYYMMDD');
    EXECUTE format(
      'CREATE TABLE %I PARTITION OF stream_messages FOR VALUES FROM (%L) TO (%L)',
      'stream_messages_' || to_char(day, 'YYYYMMDD'),
      (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
  END LOOP;
END
$$;

INSERT INTO stream_messages (msg_id, time)
SELECT msg_id, min(time) FROM readings GROUP BY msg_id;

-- Nothing else needs the per-reading key: queries use (site_id, device_id, metric, time).
ALTER TABLE readings DROP CONSTRAINT readings_pkey;

CREATE OR REPLACE FUNCTION ganzhi_ensure_reading_partitions(from_ts timestamptz, to_ts timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  day date := (from_ts AT TIME ZONE 'UTC')::date;
  created integer := 0;
  part text;
  tbl text;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'readings'::regclass) THEN
    RETURN 0;
  END IF;
  WHILE day <= (to_ts AT TIME ZONE 'UTC')::date LOOP
    -- Counts the readings partitions created; stream_messages follows day for day.
    FOREACH tbl IN ARRAY ARRAY['readings', 'stream_messages'] LOOP
      part := tbl || '_' || to_char(day, 'YYYYMMDD');
      IF to_regclass(part) IS NULL THEN
        -- Two writers may race here; the loser's error is caught and ignored.
        BEGIN
          EXECUTE format(
            'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
            part, tbl, (day::timestamp AT TIME ZONE 'UTC'),
            ((day + 1)::timestamp AT TIME ZONE 'UTC'));
          IF tbl = 'readings' THEN
            created := created + 1;
          END IF;
        EXCEPTION WHEN duplicate_table OR invalid_object_definition THEN
          NULL;
        END;
      END IF;
    END LOOP;
    day := day + 1;
  END LOOP;
  RETURN created;
END
$$;

-- Retention on plain PostgreSQL: drops the daily partitions of readings and of
-- stream_messages wholly older than keep_days; returns the readings partitions dropped.
CREATE OR REPLACE FUNCTION ganzhi_drop_reading_partitions(keep_days integer)
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
  FOR part IN
    SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'stream_messages'::regclass
      AND c.relname ~ '^stream_messages_[0-9]{8}$'
  LOOP
    IF to_date(substr(part.relname, 17), 'YYYYMMDD') < cutoff THEN
      EXECUTE format('DROP TABLE %I', part.relname);
    END IF;
  END LOOP;
  RETURN dropped;
END
$$;

-- Rollup rows are now updated in place batch after batch (an hour row by every batch of
-- that hour): room on each page keeps those updates HOT (no new index entries). Applies
-- to pages written from now on.
ALTER TABLE rollups_1m SET (fillfactor = 70);
ALTER TABLE rollups_1h SET (fillfactor = 50);
