-- The console's incident search and figures (issue 12, docs/performance.md "Console API").
--
-- incidents.rule_id: the primary alert's rule id (NULL without a primary alert), so the
-- figures' "type" and the list's rule filter need not join the alerts.
-- incidents.search_text: what the console's search (GET /api/v1/incidents?q=) looks in,
-- lower-cased (and folded, see ganzhi_search_fold), one field after the other with
-- chr(31) (unit separator) between them: the primary alert's summary, its rule id, the
-- site id, the device id, the site's name. The
-- search is then one LIKE on one column of one table: the trigram index below finds the
-- few incidents of a rare term, the walk down the primary key the first page of a common
-- one, and the planner picks between them from the column's statistics.
--
-- Triggers keep both columns in line whoever writes: an incident's primary alert, site or
-- device changing (insert or update), the primary alert's summary or rule changing, a
-- site registered, renamed or removed.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

ALTER TABLE incidents ADD COLUMN rule_id text;
ALTER TABLE incidents ADD COLUMN search_text text NOT NULL DEFAULT '';

-- What the search compares: lower() of the text, as ILIKE compares, with every character
-- outside ASCII written as 'Z' and six letters A-P (its code point in hex, 0-9a-f as A-P):
-- '冷' (U+51B7) is 'ZAAFBLH'. pg_trgm takes only letters and digits for trigrams (in the
-- C locale of our clusters, ASCII ones), so Chinese text (site names, summaries) had none
-- and a site name's search read most of the table. The fold is applied to the text and to
-- the pattern alike and keeps LIKE's answer: lower() leaves no upper-case ASCII letter, so
-- every 'Z' starts a code and every code is 7 letters; a match can only line up whole
-- characters. Wildcards and escapes are ASCII and pass through.
CREATE FUNCTION ganzhi_search_fold(t text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT COALESCE(string_agg(
           CASE WHEN ascii(c) < 128 THEN c
                ELSE 'Z' || translate(lpad(to_hex(ascii(c)), 6, '0'), '0123456789abcdef',
                                      'ABCDEFGHIJKLMNOP') END, '' ORDER BY n), '')
  FROM regexp_split_to_table(lower(t), '') WITH ORDINALITY AS x(c, n)
$$;

CREATE FUNCTION ganzhi_incident_search_text(summary text, rule_id text, site_id text,
                                            device_id text, site_name text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT ganzhi_search_fold(concat_ws(chr(31), summary, rule_id, site_id, device_id,
                                      site_name))
$$;

CREATE FUNCTION ganzhi_incident_search() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  a_rule text;
  a_summary text;
BEGIN
  IF TG_OP = 'UPDATE' AND NEW.primary_alert_id IS NOT DISTINCT FROM OLD.primary_alert_id
     AND NEW.site_id IS NOT DISTINCT FROM OLD.site_id
     AND NEW.device_id IS NOT DISTINCT FROM OLD.device_id THEN
    RETURN NEW;
  END IF;
  SELECT a.rule_id, a.summary INTO a_rule, a_summary
  FROM alerts a WHERE a.id = NEW.primary_alert_id;
  NEW.rule_id := a_rule;
  NEW.search_text := ganzhi_incident_search_text(
    a_summary, a_rule, NEW.site_id, NEW.device_id,
    (SELECT s.name FROM sites s WHERE s.id = NEW.site_id));
  RETURN NEW;
END;
$$;

CREATE FUNCTION ganzhi_alert_incident_search() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  UPDATE incidents i SET rule_id = NEW.rule_id,
         search_text = ganzhi_incident_search_text(
           NEW.summary, NEW.rule_id, i.site_id, i.device_id,
           (SELECT s.name FROM sites s WHERE s.id = i.site_id))
  WHERE i.primary_alert_id = NEW.id;
  RETURN NULL;
END;
$$;

CREATE FUNCTION ganzhi_site_incident_search() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  ids text[];
BEGIN
  IF TG_OP = 'INSERT' THEN
    ids := ARRAY[NEW.id];
  ELSIF TG_OP = 'DELETE' THEN
    ids := ARRAY[OLD.id];
  ELSE
    ids := ARRAY[OLD.id, NEW.id];
  END IF;
  UPDATE incidents i SET search_text = ganzhi_incident_search_text(
           (SELECT a.summary FROM alerts a WHERE a.id = i.primary_alert_id), i.rule_id,
           i.site_id, i.device_id, (SELECT s.name FROM sites s WHERE s.id = i.site_id))
  WHERE i.site_id = ANY(ids);
  RETURN NULL;
END;
$$;

-- Existing incidents.
UPDATE incidents i SET rule_id = x.rule_id,
       search_text = ganzhi_incident_search_text(x.summary, x.rule_id, i.site_id,
                                                 i.device_id, x.name)
FROM (SELECT i.id, a.rule_id, a.summary, s.name
      FROM incidents i LEFT JOIN alerts a ON a.id = i.primary_alert_id
      LEFT JOIN sites s ON s.id = i.site_id) x
WHERE x.id = i.id;

CREATE TRIGGER incidents_search
  BEFORE INSERT OR UPDATE OF primary_alert_id, site_id, device_id ON incidents
  FOR EACH ROW EXECUTE FUNCTION ganzhi_incident_search();
CREATE TRIGGER alerts_incident_search
  AFTER UPDATE OF summary, rule_id ON alerts
  FOR EACH ROW
  WHEN (OLD.summary IS DISTINCT FROM NEW.summary OR OLD.rule_id IS DISTINCT FROM NEW.rule_id)
  EXECUTE FUNCTION ganzhi_alert_incident_search();
CREATE TRIGGER sites_incident_search_insert_delete
  AFTER INSERT OR DELETE ON sites
  FOR EACH ROW EXECUTE FUNCTION ganzhi_site_incident_search();
CREATE TRIGGER sites_incident_search_update
  AFTER UPDATE OF id, name ON sites
  FOR EACH ROW
  WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.name IS DISTINCT FROM NEW.name)
  EXECUTE FUNCTION ganzhi_site_incident_search();

-- The search: trigrams of search_text (LIKE '%term%' with a term of 3 characters or more).
CREATE INDEX incidents_search ON incidents USING gin (search_text gin_trgm_ops);
-- The incidents whose primary an alert is (the trigger above).
CREATE INDEX incidents_primary_alert ON incidents (primary_alert_id);
-- The figures' windows (0011's indexes again, now covering): the columns the figures read
-- ride along, so a window's incidents come from the index alone (an index-only scan; the
-- rows of a window are spread over the table, one page each) - incidents opened in a
-- period (overview, risk, handling, trend) ...
DROP INDEX incidents_opened;
CREATE INDEX incidents_opened ON incidents (opened_at)
  INCLUDE (resolved_at, status, severity, false_positive, site_id, rule_id, family,
           notified_at, acknowledged_at, dispatched_at, closed_at);
-- ... and the trend's incidents open in a window: those resolved after its start ...
DROP INDEX incidents_resolved;
CREATE INDEX incidents_resolved ON incidents (resolved_at)
  INCLUDE (opened_at, severity, false_positive, site_id, rule_id, family)
  WHERE resolved_at IS NOT NULL;
-- ... and those not resolved, opened before its end.
CREATE INDEX incidents_unresolved ON incidents (opened_at)
  INCLUDE (severity, false_positive, site_id, rule_id, family)
  WHERE resolved_at IS NULL;

-- The planner's choice between the trigram index and the walk rests on how many rows it
-- expects a term to match, which for LIKE '%term%' it reads off the column's histogram:
-- 1000 buckets instead of 100 tell a site's 150 incidents in 80,000 from a common term's
-- thousands.
ALTER TABLE incidents ALTER COLUMN search_text SET STATISTICS 1000;
ANALYZE incidents;
