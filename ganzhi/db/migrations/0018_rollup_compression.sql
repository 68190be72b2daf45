-- The rollups compressed once nothing refreshes them any more: a TimescaleDB feature
-- (migrations/timescaledb/0018). On plain PostgreSQL the stream worker keeps the rollups
-- as tables; this only says so in the catalogue.
COMMENT ON TABLE rollups_1m IS
  'one-minute rollups of readings, kept by the stream worker (compacted from rollup_deltas)';
COMMENT ON TABLE rollups_1h IS
  'one-hour rollups of readings, kept by the stream worker (compacted from rollup_deltas)';
