-- TimescaleDB flavour of 0018: both continuous aggregates compressed (segments per site,
-- device and metric, as their GROUP BY) 45 days after their buckets, beyond the 30 days
-- their refresh policies cover, so a policy never refreshes a compressed region. Once
-- readings are compressed (0001: after 7 days) the one-minute rollup is the largest part
-- of what a month keeps (docs/operations.md, Sizing). A manual refresh of an older range
-- (a box back after more than 30 days) still works over compressed buckets.
ALTER MATERIALIZED VIEW rollups_1m_cagg SET (timescaledb.compress = true);
ALTER MATERIALIZED VIEW rollups_1h_cagg SET (timescaledb.compress = true);
SELECT add_compression_policy('rollups_1m_cagg', compress_after => interval '45 days');
SELECT add_compression_policy('rollups_1h_cagg', compress_after => interval '45 days');
