-- Alerts, their history, and the transactional outbox of clues for the task system.
CREATE TABLE alerts (
  id          bigserial   PRIMARY KEY,
  fingerprint text        NOT NULL,
  rule_id     text        NOT NULL,
  severity    text        NOT NULL,
  site_id     text        NOT NULL,
  device_id   text        NOT NULL,
  status      text        NOT NULL CHECK (status IN ('open', 'resolved')),
  started_at  timestamptz NOT NULL,
  ended_at    timestamptz,
  summary     text        NOT NULL,
  "values"    jsonb       NOT NULL DEFAULT '{}',
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  -- A replayed firing transition finds its alert again instead of making a new one.
  UNIQUE (fingerprint, started_at)
);
-- At most one open alert per condition (device + rule).
CREATE UNIQUE INDEX alerts_one_open ON alerts (fingerprint) WHERE status = 'open';
CREATE INDEX alerts_site_status ON alerts (site_id, status, started_at DESC);

-- Every transition applied, keyed by its deterministic id: the idempotency log.
CREATE TABLE alert_events (
  transition_id text        PRIMARY KEY,
  alert_id      bigint      NOT NULL REFERENCES alerts (id),
  kind          text        NOT NULL,
  at            timestamptz NOT NULL,
  payload       jsonb       NOT NULL,
  received_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_events_alert ON alert_events (alert_id, at);

CREATE TABLE clue_outbox (
  id              bigserial   PRIMARY KEY,
  clue_id         uuid        NOT NULL UNIQUE,
  alert_id        bigint      NOT NULL UNIQUE REFERENCES alerts (id),
  payload         jsonb       NOT NULL,
  status          text        NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'delivered', 'dead')),
  attempts        integer     NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  last_error      text,
  last_status     integer,
  created_at      timestamptz NOT NULL DEFAULT now(),
  delivered_at    timestamptz
);
CREATE INDEX clue_outbox_due ON clue_outbox (next_attempt_at) WHERE status = 'pending';
