-- One-minute rollups per device and metric, recomputed from raw readings for every
-- minute a batch touches, so replays and late readings give the same numbers.
CREATE TABLE rollups_1m (
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
CREATE INDEX rollups_1m_site_bucket ON rollups_1m (site_id, bucket DESC);
