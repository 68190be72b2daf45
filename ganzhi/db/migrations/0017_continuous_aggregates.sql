-- Nothing on plain PostgreSQL: the stream worker keeps the rollups itself (0015). The
-- TimescaleDB flavour replaces them with continuous aggregates here
-- (timescaledb/0017_continuous_aggregates.sql).
SELECT 1;
