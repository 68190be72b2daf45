-- The console (issue 12): the live stream and the overview, risk and trend figures.
--
-- Every row written to incident_history is announced on the channel
-- 'ganzhi_incident_history' with its id as the payload. NOTIFY is transactional: the
-- listener hears of a row only once it is committed, in commit order. One LISTEN
-- connection per API process loads the row and fans it out to the live streams whose
-- scope holds the incident's site (api/routes/live.py, docs/contracts.md "Live stream").
CREATE FUNCTION ganzhi_notify_incident_history() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('ganzhi_incident_history', NEW.id::text);
  RETURN NULL;
END;
$$;

CREATE TRIGGER incident_history_notify
  AFTER INSERT ON incident_history
  FOR EACH ROW EXECUTE FUNCTION ganzhi_notify_incident_history();

-- The figures' windows: incidents opened in a period (overview's 24 h, risk, trend)...
CREATE INDEX incidents_opened ON incidents (opened_at);
-- ... resolved in a period (overview's 24 h, trend's open intervals) ...
CREATE INDEX incidents_resolved ON incidents (resolved_at) WHERE resolved_at IS NOT NULL;
-- ... and those open now (overview's totals and open critical list).
CREATE INDEX incidents_open ON incidents (severity, id DESC) WHERE status = 'open';
