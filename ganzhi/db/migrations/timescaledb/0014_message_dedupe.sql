-- TimescaleDB flavour of 0014: the message ids the stream deduplicates by, a hypertable
-- retained like readings. readings never had the per-reading key here (0001), so nothing
-- is dropped; the partition functions stay the no-ops of 0001.
CREATE TABLE stream_messages (
  msg_id uuid        NOT NULL,
  time   timestamptz NOT NULL,
  PRIMARY KEY (msg_id, time)
);
SELECT create_hypertable('stream_messages', 'time', chunk_time_interval => interval '1 day');
SELECT add_retention_policy('stream_messages', interval '400 days');

INSERT INTO stream_messages (msg_id, time)
SELECT msg_id, min(time) FROM readings GROUP BY msg_id;

ALTER TABLE rollups_1m SET (fillfactor = 70);
ALTER TABLE rollups_1h SET (fillfactor = 50);
