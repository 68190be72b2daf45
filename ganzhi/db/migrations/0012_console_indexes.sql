-- The console's detail pages (benchmarks/console_api.py, docs/performance.md "Console
-- API"): an incident's clue events and an alert's clue read clue_outbox by incident and
-- by alert. Since 0008 dropped the (alert_id, event) key neither had an index, so each
-- detail page scanned the whole outbox (about 25-50 ms at 150k outbox rows).
CREATE INDEX clue_outbox_incident ON clue_outbox (incident_id);
CREATE INDEX clue_outbox_alert ON clue_outbox (alert_id);
