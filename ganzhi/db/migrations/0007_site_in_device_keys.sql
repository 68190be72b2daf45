-- Two sites may give their devices the same ids: every key, index and join that names a
-- device names its site too. Rollups were keyed (device_id, metric, bucket), so two
-- sites' "fridge-1" folded into one row.
ALTER TABLE rollups_1m DROP CONSTRAINT rollups_1m_pkey;
ALTER TABLE rollups_1m ADD PRIMARY KEY (site_id, device_id, metric, bucket);
ALTER TABLE rollups_1h DROP CONSTRAINT rollups_1h_pkey;
ALTER TABLE rollups_1h ADD PRIMARY KEY (site_id, device_id, metric, bucket);
DROP INDEX readings_device_metric_time;
CREATE INDEX readings_site_device_metric_time ON readings (site_id, device_id, metric, time DESC);
