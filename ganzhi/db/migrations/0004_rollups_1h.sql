-- One-hour rollups per device and metric, recomputed from the one-minute rollups of
-- every hour a batch touched (so they follow replays and late readings too).
CREATE TABLE rollups_1h (
  bucket    timestamptz      NOT NULL,
  site_id   text             NOT NULL,
  device_id text             NOT NULL,
  metric    text             NOT NULL,
  count     integer          NOT NULL,
  min       double precision NOT NULL,
  max       double precision NOT NULL,
  mean      double precision NOT NULL,
  last      double precision NOT NULL,
  last_time timestamptz      NOT NULL,
  updated_at timestamptz     NOT NULL DEFAULT now(),
  PRIMARY KEY (device_id, metric, bucket)
);
CREATE INDEX rollups_1h_site_bucket ON rollups_1h (site_id, bucket DESC);
