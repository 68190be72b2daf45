-- A clue has two events for the task system: 'created' when its alert opens, and
-- 'resolved' when the alert clears (for a kitchen camera: the rectification, with a
-- fresh snapshot). Both go through the outbox; one row per clue and event.
ALTER TABLE clue_outbox ADD COLUMN event text NOT NULL DEFAULT 'created'
  CHECK (event IN ('created', 'resolved'));
ALTER TABLE clue_outbox DROP CONSTRAINT clue_outbox_clue_id_key;
ALTER TABLE clue_outbox DROP CONSTRAINT clue_outbox_alert_id_key;
ALTER TABLE clue_outbox ADD CONSTRAINT clue_outbox_clue_event UNIQUE (clue_id, event);
ALTER TABLE clue_outbox ADD CONSTRAINT clue_outbox_alert_event UNIQUE (alert_id, event);
