-- Incidents: related alerts of one device (or site) form one incident, and one incident is
-- one clue. People work incidents (acknowledge, assign, comment, resolve); the task system
-- reports back on their clues. Silences hold clues; each receiver has its own outbox rows
-- and delivery log. See docs/alerts.md.
CREATE TABLE incidents (
  id               bigserial   PRIMARY KEY,
  -- Correlation key: family + scope, e.g. 'cold_chain:site-1/room-2'.
  group_key        text        NOT NULL,
  family           text        NOT NULL,
  site_id          text        NOT NULL,
  device_id        text,
  status           text        NOT NULL CHECK (status IN ('open', 'resolved')),
  severity         text        NOT NULL,
  primary_alert_id bigint      REFERENCES alerts (id),
  clue_id          uuid        NOT NULL UNIQUE,
  -- 'held': no clue sent (yet): held_reason says why (info, silenced:<id>, inhibited:<rule>).
  notify_state     text        NOT NULL DEFAULT 'held'
                   CHECK (notify_state IN ('held', 'notified')),
  held_reason      text,
  notified_at      timestamptz,
  -- Clue events of this incident so far (created = 0): the next one gets event_seq + 1.
  event_seq        integer     NOT NULL DEFAULT -1,
  opened_at        timestamptz NOT NULL,
  resolved_at      timestamptz,
  resolved_by      text,
  resolve_reason   text,
  acknowledged_at  timestamptz,
  acknowledged_by  text,
  assignee         text,
  escalation_level integer     NOT NULL DEFAULT 0,
  escalated_at     timestamptz,
  escalated_from   text[]      NOT NULL DEFAULT '{}',
  reopen_count     integer     NOT NULL DEFAULT 0,
  -- Feedback of the task system, first time of each state.
  task_status      text,
  accepted_at      timestamptz,
  dispatched_at    timestamptz,
  rectified_at     timestamptz,
  closed_at        timestamptz,
  rejected_at      timestamptz,
  false_positive   boolean     NOT NULL DEFAULT false,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX incidents_one_open ON incidents (group_key) WHERE status = 'open';
CREATE INDEX incidents_group_recent ON incidents (group_key, resolved_at DESC);
CREATE INDEX incidents_site_status ON incidents (site_id, status, opened_at DESC);
CREATE INDEX incidents_held ON incidents (id) WHERE status = 'open' AND notify_state = 'held';
CREATE INDEX incidents_unacked ON incidents (notified_at)
  WHERE status = 'open' AND notify_state = 'notified' AND acknowledged_at IS NULL;

ALTER TABLE alerts ADD COLUMN incident_id bigint REFERENCES incidents (id);
ALTER TABLE alerts ADD COLUMN resolved_by text;
ALTER TABLE alerts ADD COLUMN resolve_reason text;
CREATE INDEX alerts_incident ON alerts (incident_id);
CREATE INDEX alerts_device_open ON alerts (site_id, device_id) WHERE status = 'open';

-- Who did what, when, to an incident or one of its alerts: people, the task system
-- (feedback), and the platform itself (actor 'system': opened, joined, held, notified,
-- escalated, reopened, resolved).
CREATE TABLE incident_history (
  id          bigserial   PRIMARY KEY,
  incident_id bigint      NOT NULL REFERENCES incidents (id),
  alert_id    bigint      REFERENCES alerts (id),
  at          timestamptz NOT NULL DEFAULT now(),
  actor       text        NOT NULL,
  action      text        NOT NULL,
  detail      jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX incident_history_incident ON incident_history (incident_id, id);

-- Silences and maintenance windows: time-boxed, by matchers on site, device, rule,
-- severity (each optional, '*' globs allowed). Ended early by setting ended_at.
CREATE TABLE silences (
  id         bigserial   PRIMARY KEY,
  kind       text        NOT NULL DEFAULT 'silence' CHECK (kind IN ('silence', 'maintenance')),
  matchers   jsonb       NOT NULL,
  starts_at  timestamptz NOT NULL,
  ends_at    timestamptz NOT NULL,
  created_by text        NOT NULL,
  reason     text        NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  ended_at   timestamptz,
  ended_by   text,
  CHECK (ends_at > starts_at)
);
CREATE INDEX silences_active ON silences (ends_at) WHERE ended_at IS NULL;

-- Existing alerts become one incident each; their clue keeps its id.
INSERT INTO incidents (group_key, family, site_id, device_id, status, severity,
                       primary_alert_id, clue_id, notify_state, notified_at, event_seq,
                       opened_at, resolved_at, created_at, updated_at)
SELECT 'alert:' || a.id, a.rule_id, a.site_id, a.device_id, a.status, a.severity, a.id,
       COALESCE(o.clue_id, md5('alert:' || a.id)::uuid),
       CASE WHEN o.clue_id IS NULL THEN 'held' ELSE 'notified' END,
       o.created_at,
       CASE WHEN o.clue_id IS NULL THEN -1
            WHEN EXISTS (SELECT 1 FROM clue_outbox r WHERE r.alert_id = a.id
                         AND r.event = 'resolved') THEN 1 ELSE 0 END,
       a.started_at, a.ended_at, a.created_at, a.updated_at
FROM alerts a
LEFT JOIN clue_outbox o ON o.alert_id = a.id AND o.event = 'created';
UPDATE alerts a SET incident_id = i.id FROM incidents i WHERE i.group_key = 'alert:' || a.id;
INSERT INTO incident_history (incident_id, alert_id, at, actor, action)
SELECT incident_id, id, created_at, 'system', 'opened' FROM alerts;

-- The outbox: one row per receiver and clue event. The Idempotency-Key is the clue id for
-- 'created' and '<clue_id>:<event>:<seq>' for every later event, the same for every
-- receiver; the body of one event is the same for every receiver.
ALTER TABLE clue_outbox DROP CONSTRAINT clue_outbox_clue_event;
ALTER TABLE clue_outbox DROP CONSTRAINT clue_outbox_alert_event;
ALTER TABLE clue_outbox DROP CONSTRAINT clue_outbox_event_check;
ALTER TABLE clue_outbox DROP CONSTRAINT clue_outbox_status_check;
ALTER TABLE clue_outbox ALTER COLUMN alert_id DROP NOT NULL;
ALTER TABLE clue_outbox ADD COLUMN receiver text NOT NULL DEFAULT 'task-system';
ALTER TABLE clue_outbox ALTER COLUMN receiver DROP DEFAULT;
ALTER TABLE clue_outbox ADD COLUMN incident_id bigint REFERENCES incidents (id);
ALTER TABLE clue_outbox ADD COLUMN seq integer NOT NULL DEFAULT 0;
ALTER TABLE clue_outbox ADD COLUMN idempotency_key text;
ALTER TABLE clue_outbox ADD COLUMN dropped_by text;
UPDATE clue_outbox o SET incident_id = a.incident_id,
       seq = CASE o.event WHEN 'created' THEN 0 ELSE 1 END,
       idempotency_key = CASE o.event WHEN 'created' THEN o.clue_id::text
                         ELSE o.clue_id::text || ':' || o.event END
FROM alerts a WHERE a.id = o.alert_id;
ALTER TABLE clue_outbox ALTER COLUMN idempotency_key SET NOT NULL;
ALTER TABLE clue_outbox ADD CONSTRAINT clue_outbox_event_check
  CHECK (event IN ('created', 'updated', 'escalated', 'reopened', 'resolved'));
ALTER TABLE clue_outbox ADD CONSTRAINT clue_outbox_status_check
  CHECK (status IN ('pending', 'delivered', 'dead', 'dropped'));
ALTER TABLE clue_outbox ADD CONSTRAINT clue_outbox_receiver_key UNIQUE (receiver, idempotency_key);
CREATE INDEX clue_outbox_clue ON clue_outbox (receiver, clue_id, seq);

-- Every delivery attempt: receiver, status, latency.
CREATE TABLE clue_deliveries (
  id          bigserial   PRIMARY KEY,
  outbox_id   bigint      NOT NULL REFERENCES clue_outbox (id),
  receiver    text        NOT NULL,
  attempt     integer     NOT NULL,
  at          timestamptz NOT NULL DEFAULT now(),
  status_code integer,
  outcome     text        NOT NULL,
  latency_ms  real        NOT NULL,
  error       text
);
CREATE INDEX clue_deliveries_outbox ON clue_deliveries (outbox_id, id);
CREATE INDEX clue_deliveries_receiver ON clue_deliveries (receiver, at DESC);

-- Feedback of the task system, once per clue and state (a retried call changes nothing).
CREATE TABLE clue_feedback (
  clue_id     uuid        NOT NULL,
  status      text        NOT NULL
              CHECK (status IN ('accepted', 'dispatched', 'rectified', 'closed', 'rejected')),
  incident_id bigint      NOT NULL REFERENCES incidents (id),
  at          timestamptz NOT NULL,
  actor       text        NOT NULL,
  task_id     text,
  note        text,
  received_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (clue_id, status)
);

-- API keys of machine callers (the task system's feedback) and, until staff sign-in
-- exists, of staff tools. Only a hash of the secret is kept.
CREATE TABLE api_keys (
  id          text        PRIMARY KEY,
  name        text        NOT NULL,
  secret_hash text        NOT NULL,
  scopes      text[]      NOT NULL,
  site_ids    text[],
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz
);
