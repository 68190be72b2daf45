"""Console API latency: the browser console's calls against a city's worth of data.

Acceptance check of issue 12: with 100,000 alerts and 1,000,000 readings in the
database, the console's API calls answer in under 50 ms at the 95th percentile.

Starts its own PostgreSQL cluster on a free port (fsync on), applies the migrations and
seeds it in SQL (``generate_series``, no row-by-row Python): a city with 10 districts of
4 stations, 500 sites over them, 3,000 devices (cold rooms, elevators, kitchen cameras),
alerts grouped into incidents over 90 days (cold_chain.*, elevator.*, vision.*, device.*;
about 95% resolved; their transitions, history, clue events and deliveries; some false
positives), and readings of cold rooms over 90 days with their one-minute and one-hour
rollups. Then it creates an account at the city (root) and one at a district, starts the
real API (``ganzhi api``) on a free port, signs both in through ``/api/v1/auth/login``
and replays the console's calls one at a time, timing each from this process.

    .venv/bin/python benchmarks/console_api.py                  # 100k alerts, 1M readings
    .venv/bin/python benchmarks/console_api.py --quick          # smoke run, small data
    .venv/bin/python benchmarks/console_api.py --data-dir /tmp/cb --keep   # seed once, reuse

An endpoint the API does not have (yet) is reported as ``missing`` instead of failing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from ganzhi import accounts
from ganzhi.db.migrate import migrate
from ganzhi.stack.infra import free_port, port_open, start_postgres, terminate

TARGET_MS = 50.0
JWT_SECRET = "console-bench-jwt-signing-key-0123456789abcdef"
PASSWORD = "console-bench-password-1"
SPAN_DAYS = 90
ROOT_USER = "bench-city"
DISTRICT_USER = "bench-district"

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- seeding ----------------------------------------------------------------------------

_TREE = """
INSERT INTO jurisdictions (id, parent_id, name, level, path)
VALUES ('city', NULL, '示范市', 'city', '/city/');
INSERT INTO jurisdictions (id, parent_id, name, level, path)
SELECT 'd' || lpad(d::text, 2, '0'), 'city', '第' || d || '区', 'district',
       '/city/d' || lpad(d::text, 2, '0') || '/'
FROM generate_series(1, 10) d;
INSERT INTO jurisdictions (id, parent_id, name, level, path)
SELECT format('d%s-s%s', lpad(d::text, 2, '0'), s), 'd' || lpad(d::text, 2, '0'),
       format('第%s区第%s监管所', d, s), 'station',
       format('/city/d%s/d%s-s%s/', lpad(d::text, 2, '0'), lpad(d::text, 2, '0'), s)
FROM generate_series(1, 10) d, generate_series(1, 4) s;
"""

# Sites round-robin over the 40 stations; categories 30% cold stores, 30% restaurants,
# 15% canteens, 25% elevator sites; 6 devices each.
_SITES = """
INSERT INTO sites (id, jurisdiction_id, name, category, address, licence_no, contact_name,
                   contact_phone)
SELECT format('site-%s', lpad(i::text, 4, '0')),
       format('d%s-s%s', lpad((((i - 1) % 40) / 4 + 1)::text, 2, '0'), (i - 1) % 4 + 1),
       (ARRAY['鲜味', '福满', '金桥', '百味', '安心', '绿源', '海港', '阳光', '和顺', '新城'])
         [1 + (i * 7) % 10]
       || (CASE WHEN i % 20 < 6 THEN '冷库' WHEN i % 20 < 12 THEN '餐厅'
                WHEN i % 20 < 15 THEN '食堂' ELSE '大厦' END) || ' ' || i || '号',
       CASE WHEN i % 20 < 6 THEN 'cold_store' WHEN i % 20 < 12 THEN 'restaurant'
            WHEN i % 20 < 15 THEN 'canteen' ELSE 'elevator_site' END,
       '示范市' || ((i - 1) % 40 / 4 + 1) || '区 幸福路 ' || i || ' 号',
       '91440300' || lpad((i * 7919 % 100000000)::text, 8, '0') || 'XY',
       '联系人' || i, '1380000' || lpad(i::text, 4, '0')
FROM generate_series(1, @sites@) i;

INSERT INTO devices (site_id, device_id, device_class, model, location, firmware, params,
                     last_seen)
SELECT s.id,
       CASE d.cls WHEN 'cold_store' THEN 'cold-' || k WHEN 'elevator' THEN 'elev-' || k
                  ELSE 'cam-' || (k - 2) END,
       d.cls,
       CASE d.cls WHEN 'cold_store' THEN 'CR-200' WHEN 'elevator' THEN 'EL-IoT-3'
                  ELSE 'IPC-K4' END,
       CASE d.cls WHEN 'cold_store' THEN k || '号冷间' WHEN 'elevator' THEN k || '号梯'
                  ELSE '后厨' || (k - 2) END,
       '1.4.2',
       CASE d.cls
         WHEN 'cold_store' THEN '{"variant": "chilled", "set_point_c": 4.0}'::jsonb
         WHEN 'elevator' THEN '{"rated_speed_mps": 1.75, "landings": 18}'::jsonb
         ELSE '{"scenarios": ["no_mask", "no_chef_hat", "smoking", "rodent"]}'::jsonb END,
       now() - random() * interval '90 seconds'
FROM sites s, generate_series(1, 6) k,
LATERAL (SELECT CASE WHEN s.category = 'cold_store'
                       OR (s.category IN ('restaurant', 'canteen') AND k <= 2)
                     THEN 'cold_store'
                     WHEN s.category = 'elevator_site' THEN 'elevator'
                     ELSE 'kitchen_camera' END AS cls) d;
"""

# One row per incident: its device, rule, severity, times and handling. Open incidents
# are recent and at most one per correlation key (the schema's incidents_one_open).
_INCIDENTS = """
CREATE TEMP TABLE dev AS
SELECT row_number() OVER (ORDER BY site_id, device_id) AS n, site_id, device_id,
       device_class
FROM devices;

CREATE TEMP TABLE inc0 AS
SELECT k, d.site_id, d.device_id, d.device_class, r.r_rule, r.r_sev, r.r_open, r.r_dur,
       r.r_ack, r.r_task, r.r_fp, r.r_misc,
       CASE
         WHEN r.r_dev < 0.08 THEN (ARRAY['device.offline', 'device.offline', 'device.offline',
           'device.source_error', 'device.power_lost', 'device.incomplete_config'])
           [1 + floor(r.r_rule * 6)::int]
         WHEN d.device_class = 'cold_store' THEN (ARRAY['cold_chain.temperature_high',
           'cold_chain.temperature_high', 'cold_chain.temperature_high',
           'cold_chain.temperature_high', 'cold_chain.door_open', 'cold_chain.door_open',
           'cold_chain.door_open', 'cold_chain.temperature_low', 'cold_chain.rate_of_rise',
           'cold_chain.probe_failure', 'cold_chain.compressor_not_running',
           'cold_chain.humidity', 'cold_chain.frozen_rebound'])[1 + floor(r.r_rule * 13)::int]
         WHEN d.device_class = 'elevator' THEN (ARRAY['elevator.trapped_at_level',
           'elevator.trapped_not_at_level', 'elevator.emergency_call',
           'elevator.alarm_button', 'elevator.door_open_fault', 'elevator.door_open_fault',
           'elevator.door_close_fault', 'elevator.door_close_fault',
           'elevator.stop_outside_door_zone', 'elevator.power_failure', 'elevator.overspeed',
           'elevator.safety_circuit_open', 'elevator.maintenance_mode',
           'elevator.inspection_mode'])[1 + floor(r.r_rule * 14)::int]
         ELSE (ARRAY['vision.no_mask', 'vision.no_mask', 'vision.no_mask',
           'vision.no_chef_hat', 'vision.no_chef_hat', 'vision.no_chef_hat',
           'vision.no_work_clothes', 'vision.no_work_clothes', 'vision.smoking',
           'vision.phone', 'vision.uncovered_bin', 'vision.rodent', 'vision.camera_covered',
           'vision.camera_covered'])[1 + floor(r.r_rule * 14)::int]
       END AS rule_id
FROM (SELECT k, 1 + floor(random() * (SELECT count(*) FROM dev))::int AS dn
      FROM generate_series(1, @incidents@) k) g
JOIN dev d ON d.n = g.dn,
LATERAL (SELECT random() + 0 * k AS r_dev, random() + 0 * k AS r_rule,
                random() + 0 * k AS r_sev, random() + 0 * k AS r_open,
                random() + 0 * k AS r_dur, random() + 0 * k AS r_ack,
                random() + 0 * k AS r_task, random() + 0 * k AS r_fp,
                random() + 0 * k AS r_misc) r;

CREATE TEMP TABLE inc1 AS
SELECT *,
       CASE
         WHEN rule_id IN ('elevator.trapped_at_level', 'elevator.trapped_not_at_level',
                          'elevator.emergency_call', 'elevator.overspeed',
                          'elevator.safety_circuit_open') THEN 'critical'
         WHEN rule_id = 'cold_chain.temperature_high' AND r_sev < 0.3 THEN 'critical'
         WHEN rule_id IN ('cold_chain.temperature_high', 'cold_chain.temperature_low',
                          'cold_chain.compressor_not_running', 'cold_chain.frozen_rebound',
                          'elevator.door_open_fault', 'elevator.door_close_fault',
                          'elevator.power_failure', 'elevator.alarm_button',
                          'vision.rodent', 'vision.camera_covered', 'device.power_lost')
           THEN 'major'
         WHEN rule_id IN ('device.incomplete_config', 'elevator.maintenance_mode',
                          'elevator.inspection_mode') THEN 'info'
         ELSE 'minor'
       END AS severity,
       CASE
         WHEN rule_id LIKE 'cold_chain.%' THEN 'cold_chain'
         WHEN rule_id IN ('elevator.trapped_at_level', 'elevator.trapped_not_at_level',
                          'elevator.emergency_call', 'elevator.alarm_button')
           THEN 'elevator_entrapment'
         WHEN rule_id LIKE 'device.%' THEN 'device_health'
         ELSE rule_id
       END AS family,
       r_open < 0.05 AS want_open,
       -- Open incidents are recent; the others anywhere in the 90 days.
       CASE WHEN r_open < 0.05 THEN now() - r_misc ^ 2 * interval '10 days'
            ELSE now() - r_misc * interval '@span@ days' END AS opened_at
FROM inc0;

CREATE TEMP TABLE inc AS
SELECT row_number() OVER (ORDER BY opened_at, k) AS id, x.*,
       x.family || ':' || x.site_id || '/' || x.device_id AS group_key,
       want_open AND row_number() OVER (PARTITION BY x.family, x.site_id, x.device_id,
                                                    want_open
                                        ORDER BY opened_at DESC) = 1 AS is_open,
       -- 5 minutes to 2 days, mostly short; never past now.
       LEAST(interval '1 minute' * (5 + r_dur ^ 3 * 2875),
             (now() - opened_at) * 0.9) AS duration
FROM inc1 x;
ALTER TABLE inc ADD PRIMARY KEY (id);

INSERT INTO incidents (id, group_key, family, site_id, device_id, status, severity,
  primary_alert_id, clue_id, notify_state, held_reason, notified_at, event_seq, opened_at,
  resolved_at, resolved_by, resolve_reason, acknowledged_at, acknowledged_by, assignee,
  task_status, accepted_at, dispatched_at, rectified_at, closed_at, rejected_at,
  false_positive, created_at, updated_at)
SELECT id, group_key, family, site_id, device_id,
       CASE WHEN is_open THEN 'open' ELSE 'resolved' END, severity, NULL,
       md5('bench-clue-' || id)::uuid,
       CASE WHEN severity = 'info' THEN 'held' ELSE 'notified' END,
       CASE WHEN severity = 'info' THEN 'info' END,
       CASE WHEN severity <> 'info' THEN opened_at + interval '2 seconds' END,
       CASE WHEN severity = 'info' THEN -1 WHEN is_open THEN 0 ELSE 1 END,
       opened_at,
       CASE WHEN NOT is_open THEN opened_at + duration END,
       CASE WHEN is_open THEN NULL WHEN fp THEN 'key:task-system'
            WHEN r_task < 0.2 THEN 'user:staff-' || (id % 20) ELSE 'system' END,
       CASE WHEN is_open THEN NULL WHEN fp THEN '误报: 任务系统驳回'
            WHEN r_task < 0.2 THEN '现场已处置' END,
       ack_at, CASE WHEN ack_at IS NOT NULL THEN 'user:staff-' || (id % 20) END,
       CASE WHEN r_ack < 0.3 THEN 'staff-' || (id % 20) END,
       CASE WHEN severity = 'info' THEN NULL WHEN fp THEN 'rejected'
            WHEN NOT is_open AND r_task < 0.7 THEN 'closed'
            WHEN NOT is_open THEN 'rectified'
            WHEN r_task < 0.6 THEN 'dispatched' ELSE 'accepted' END,
       CASE WHEN severity <> 'info' THEN opened_at + duration * 0.05 END,
       CASE WHEN severity <> 'info' AND NOT fp AND (NOT is_open OR r_task < 0.6)
            THEN opened_at + duration * 0.2 END,
       CASE WHEN severity <> 'info' AND NOT fp AND NOT is_open
            THEN opened_at + duration * 0.9 END,
       CASE WHEN severity <> 'info' AND NOT fp AND NOT is_open AND r_task < 0.7
            THEN opened_at + duration END,
       CASE WHEN fp THEN opened_at + duration END,
       fp, opened_at, COALESCE(opened_at + duration, now())
FROM (SELECT *,
             NOT is_open AND severity <> 'info'
               AND r_fp < CASE WHEN rule_id LIKE 'vision.%' THEN 0.08 ELSE 0.015 END AS fp,
             CASE WHEN severity <> 'info' AND r_ack < 0.75
                  THEN opened_at + interval '2 seconds' + duration * 0.02 * r_ack END
               AS ack_at
      FROM inc) i;
"""

# Alerts: each incident gets one or two (the ratio alerts/incidents), the second a
# re-firing of the same condition later on; their transitions, history, clue events.
_ALERTS = """
CREATE TEMP TABLE al AS
SELECT n AS id, i.id AS incident_id, j, i.rule_id, i.severity, i.site_id, i.device_id,
       i.is_open, i.opened_at, i.duration, i.r_misc,
       md5(i.rule_id || ':' || i.site_id || '/' || i.device_id) AS fingerprint,
       i.opened_at + i.duration * 0.5 * j AS started_at,
       CASE WHEN j = 0 AND last THEN (CASE WHEN i.is_open THEN NULL
                                           ELSE i.opened_at + i.duration END)
            WHEN j = 0 THEN i.opened_at + i.duration * 0.3
            WHEN i.is_open THEN NULL ELSE i.opened_at + i.duration END AS ended_at
FROM (SELECT n, ((n - 1)::bigint * @incidents@ / @alerts@) + 1 AS incident_id,
             count(*) OVER (PARTITION BY ((n - 1)::bigint * @incidents@ / @alerts@)) AS members,
             row_number() OVER (PARTITION BY ((n - 1)::bigint * @incidents@ / @alerts@)
                                ORDER BY n) - 1 AS j
      FROM generate_series(1, @alerts@) n) g
CROSS JOIN LATERAL (SELECT g.j = g.members - 1 AS last) l
JOIN inc i ON i.id = g.incident_id;
-- Alert ids follow time, like the real ones.
CREATE TEMP TABLE al2 AS
SELECT row_number() OVER (ORDER BY started_at, id) AS aid, *,
       CASE
         WHEN rule_id LIKE 'cold_chain.%' THEN jsonb_build_object(
           'temperature_c', round((8.5 + r_misc * 6)::numeric, 1), 'limit_c', 8.0,
           'duration_s', 600 + floor(r_misc * 3000))
         WHEN rule_id LIKE 'vision.%' THEN jsonb_build_object(
           'snapshot_sha256', encode(sha256(('bench-snap-' || id)::bytea), 'hex'),
           'boxes', 1, 'model', 'ppe-yolo-v2', 'detections', jsonb_build_array(
             jsonb_build_object('label', substr(rule_id, 8), 'score',
                                round((0.6 + r_misc * 0.39)::numeric, 2),
                                'x1', 120, 'y1', 80, 'x2', 260, 'y2', 300)))
         WHEN rule_id LIKE 'elevator.%' THEN jsonb_build_object(
           'floor', 1 + floor(r_misc * 18), 'speed_mps', 0)
         ELSE '{}'::jsonb
       END AS vals,
       device_id || ' ' || CASE
         WHEN rule_id = 'cold_chain.temperature_high' THEN '温度高于上限 8.0 °C'
         WHEN rule_id = 'cold_chain.door_open' THEN '冷库门长时间未关'
         WHEN rule_id LIKE 'cold_chain.%' THEN '冷链异常 ' || substr(rule_id, 12)
         WHEN rule_id LIKE 'elevator.trapped%' THEN '电梯困人'
         WHEN rule_id LIKE 'elevator.%' THEN '电梯故障 ' || substr(rule_id, 10)
         WHEN rule_id LIKE 'vision.%' THEN '后厨违规 ' || substr(rule_id, 8)
         WHEN rule_id = 'device.offline' THEN '设备离线'
         ELSE '设备异常 ' || substr(rule_id, 8)
       END AS summary
FROM al;
ALTER TABLE al2 ADD PRIMARY KEY (aid);

INSERT INTO alerts (id, fingerprint, rule_id, severity, site_id, device_id, status,
  started_at, ended_at, summary, "values", created_at, updated_at, incident_id,
  resolved_by)
SELECT aid, fingerprint, rule_id, severity, site_id, device_id,
       CASE WHEN ended_at IS NULL THEN 'open' ELSE 'resolved' END,
       started_at, ended_at, summary, vals, started_at, COALESCE(ended_at, started_at),
       incident_id, CASE WHEN ended_at IS NOT NULL THEN 'system' END
FROM al2 ORDER BY aid;

UPDATE incidents i SET primary_alert_id = a.aid
FROM al2 a WHERE a.incident_id = i.id AND a.j = 0;

INSERT INTO alert_events (transition_id, alert_id, kind, at, payload, received_at)
SELECT md5(fingerprint || ':' || kind || ':' || at), aid, kind, at,
       jsonb_build_object('kind', kind, 'fingerprint', fingerprint, 'rule_id', rule_id,
                          'severity', severity, 'site_id', site_id, 'device_id', device_id,
                          'started_at', started_at, 'at', at, 'summary', summary,
                          'values', vals),
       at + interval '1 second'
FROM (SELECT *, 'firing' AS kind, started_at AS at FROM al2
      UNION ALL
      SELECT *, 'resolved', ended_at FROM al2 WHERE ended_at IS NOT NULL) e;
"""

_HISTORY = """
INSERT INTO incident_history (incident_id, alert_id, at, actor, action, detail)
SELECT incident_id, alert_id, at, actor, action, detail FROM (
  SELECT a.incident_id, a.aid AS alert_id, a.started_at AS at, 'system' AS actor,
         CASE WHEN a.j = 0 THEN 'opened' ELSE 'joined' END AS action,
         jsonb_build_object('rule_id', a.rule_id, 'severity', a.severity) AS detail
  FROM al2 a
  UNION ALL
  SELECT a.incident_id, a.aid, a.ended_at, 'system', 'alert_resolved', '{}'::jsonb
  FROM al2 a WHERE a.ended_at IS NOT NULL AND a.j = 0 AND NOT a.is_open
    AND a.ended_at < a.opened_at + a.duration
  UNION ALL
  SELECT id, NULL, COALESCE(notified_at, opened_at),
         'system', CASE WHEN notify_state = 'held' THEN 'held' ELSE 'notified' END,
         CASE WHEN notify_state = 'held' THEN '{"reason": "info"}'::jsonb
              ELSE '{"receivers": ["task-system"]}'::jsonb END
  FROM incidents
  UNION ALL
  SELECT id, NULL, acknowledged_at, acknowledged_by, 'acknowledged', '{"note": "收到"}'
  FROM incidents WHERE acknowledged_at IS NOT NULL
  UNION ALL
  SELECT id, NULL, COALESCE(acknowledged_at, opened_at) + interval '1 minute',
         'user:staff-' || (id % 20), 'assigned',
         jsonb_build_object('assignee', assignee, 'from', NULL)
  FROM incidents WHERE assignee IS NOT NULL
  UNION ALL
  SELECT id, NULL, COALESCE(acknowledged_at, opened_at) + interval '3 minutes',
         'user:staff-' || (id % 20), 'commented', '{"text": "已电话联系商户"}'
  FROM incidents WHERE id % 7 = 0
  UNION ALL
  SELECT id, NULL, t.at, 'key:task-system', 'feedback.' || t.status,
         jsonb_build_object('task_id', 'T' || id)
  FROM incidents,
  LATERAL (VALUES ('accepted', accepted_at), ('dispatched', dispatched_at),
                  ('rectified', rectified_at), ('closed', closed_at),
                  ('rejected', rejected_at)) t(status, at)
  WHERE t.at IS NOT NULL
  UNION ALL
  SELECT id, NULL, resolved_at, resolved_by, 'resolved',
         jsonb_build_object('reason', COALESCE(resolve_reason, 'all alerts resolved'))
  FROM incidents WHERE status = 'resolved'
) h ORDER BY at, incident_id;

INSERT INTO clue_outbox (clue_id, alert_id, payload, status, attempts, next_attempt_at,
  created_at, delivered_at, event, receiver, incident_id, seq, idempotency_key,
  last_status)
SELECT clue_id, primary_alert_id,
       jsonb_build_object('clue_id', clue_id, 'event', event, 'incident_id', id),
       'delivered', 1, at, at, at + interval '200 milliseconds', event, 'task-system', id,
       seq, CASE WHEN seq = 0 THEN clue_id::text ELSE clue_id || ':' || event || ':' || seq
            END, 200
FROM (SELECT i.*, 'created' AS event, 0 AS seq, i.notified_at AS at
      FROM incidents i WHERE i.notify_state = 'notified'
      UNION ALL
      SELECT i.*, 'resolved', 1, i.resolved_at
      FROM incidents i WHERE i.notify_state = 'notified' AND i.status = 'resolved') o
ORDER BY at;

INSERT INTO clue_deliveries (outbox_id, receiver, attempt, at, status_code, outcome,
                             latency_ms)
SELECT id, receiver, 1, delivered_at, 200, 'delivered', 20 + (id % 50)
FROM clue_outbox ORDER BY id;
"""

_READINGS = """
INSERT INTO readings (time, site_id, device_id, metric, value, unit, msg_id, ingested_at)
SELECT t, %(site)s, %(device)s, m.metric,
       CASE m.metric
         WHEN 'temperature' THEN 4 + 2 * sin(extract(epoch FROM t) / 7200) + random()
         ELSE 70 + 10 * random() END,
       m.unit, gen_random_uuid(), t + interval '2 seconds'
FROM generate_series(%(end)s - %(step)s::interval * (%(samples)s - 1), %(end)s,
                     %(step)s::interval) t,
     (VALUES ('temperature', 'celsius'), ('humidity', 'percent')) m(metric, unit)
"""

_ROLLUPS = """
INSERT INTO rollups_1m (bucket, site_id, device_id, metric, count, min, max, mean, last,
                        last_time)
SELECT date_trunc('minute', time), site_id, device_id, metric, count(*), min(value),
       max(value), avg(value), (array_agg(value ORDER BY time DESC))[1], max(time)
FROM readings GROUP BY 1, 2, 3, 4;

INSERT INTO rollups_1h (bucket, site_id, device_id, metric, count, min, max, mean, last,
                        last_time)
SELECT date_trunc('hour', bucket), site_id, device_id, metric, sum(count), min(min),
       max(max), sum(mean * count) / sum(count), (array_agg(last ORDER BY last_time DESC))[1],
       max(last_time)
FROM rollups_1m GROUP BY 1, 2, 3, 4;
"""


@dataclass(frozen=True)
class Sizes:
    alerts: int
    readings: int
    sites: int = 500

    @property
    def incidents(self) -> int:
        return max(1, self.alerts * 4 // 5)


@contextmanager
def _step(log: Log, what: str) -> Iterator[None]:
    started = time.perf_counter()
    log(f"  seeding: {what} ...")
    yield
    log(f"  seeding: {what} done in {time.perf_counter() - started:.1f} s")


def _exec(conn: psycopg.Connection[Any], sql: str, params: dict[str, int]) -> None:
    """Statements one at a time, ``@name@`` replaced by the integer ``params[name]``
    (parameters are not allowed in CREATE TABLE AS)."""
    for name, value in params.items():
        sql = sql.replace(f"@{name}@", str(int(value)))
    for statement in sql.split(";\n"):
        if statement.strip():
            conn.execute(statement.encode())


def seed(dsn: str, sizes: Sizes, log: Log = _stderr) -> dict[str, int]:
    """Fill a freshly migrated database; returns the row counts."""
    params = {"sites": sizes.sites, "alerts": sizes.alerts,
                              "incidents": sizes.incidents, "span": SPAN_DAYS}
    with psycopg.connect(dsn, autocommit=True) as conn:
        # A history that has already happened: no triggers (the live stream's NOTIFY per
        # history row, foreign-key checks: the data is consistent by construction).
        conn.execute("SET session_replication_role = replica")
        with _step(log, "jurisdictions, sites, devices"), conn.transaction():
            _exec(conn, _TREE, {})
            _exec(conn, _SITES, params)
        with _step(log, f"{sizes.incidents:,} incidents"), conn.transaction():
            _exec(conn, _INCIDENTS, params)
        with _step(log, f"{sizes.alerts:,} alerts and their transitions"), \
                conn.transaction():
            _exec(conn, _ALERTS, params)
        with _step(log, "incident history, clue events, deliveries"), conn.transaction():
            _exec(conn, _HISTORY, params)
        for table, column in (("incidents", "id"), ("alerts", "id")):
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                         f" (SELECT COALESCE(max({column}), 1) FROM {table}))")
        _seed_readings(conn, sizes.readings, log)
        with _step(log, "VACUUM ANALYZE"):
            conn.execute("VACUUM ANALYZE")
        counts = {}
        for table in ("sites", "devices", "incidents", "alerts", "alert_events",
                      "incident_history", "clue_outbox", "readings", "rollups_1m",
                      "rollups_1h"):
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            counts[table] = int(row[0]) if row else 0
    return counts


def _seed_readings(conn: psycopg.Connection[Any], readings: int, log: Log) -> None:
    """Cold rooms reporting temperature and humidity over the whole span, as many rooms
    as it takes at one sample per 10 minutes (fewer samples when there are few)."""
    per_device_full = SPAN_DAYS * 144 * 2
    devices = max(1, readings // per_device_full)
    samples = max(1, readings // (2 * devices))
    step_s = SPAN_DAYS * 86_400 / samples
    end_row = conn.execute("SELECT date_trunc('second', now())").fetchone()
    assert end_row is not None
    end = end_row[0]
    conn.execute("SELECT ganzhi_ensure_reading_partitions(now() - %s * interval '1 day',"
                 " now() + interval '1 day')", (SPAN_DAYS + 1,))
    # The rooms: spread over the districts (cold stores first), the first one in d01.
    rooms = conn.execute(
        "SELECT d.site_id, d.device_id FROM devices d JOIN sites s ON s.id = d.site_id"
        " WHERE d.device_class = 'cold_store'"
        " ORDER BY (s.jurisdiction_id LIKE 'd01-%%') DESC, s.category <> 'cold_store',"
        " md5(d.site_id || d.device_id) LIMIT %s", (devices,)).fetchall()
    started = last = time.perf_counter()
    with _step(log, f"{readings:,} readings: {len(rooms)} rooms x 2 metrics x {samples:,}"
                    f" samples, every {step_s / 60:.1f} min"):
        for i, (site, device) in enumerate(rooms, 1):
            with conn.transaction():
                conn.execute(_READINGS, {"site": site, "device": device, "end": end,
                                         "step": f"{step_s} seconds", "samples": samples})
            if time.perf_counter() - last > 5:
                rate = i * samples * 2 / (time.perf_counter() - started)
                log(f"    readings: {i}/{len(rooms)} rooms ({rate:,.0f} rows/s)")
                last = time.perf_counter()
    with _step(log, "one-minute and one-hour rollups"), conn.transaction():
        _exec(conn, _ROLLUPS, {})


# --- accounts and the API ---------------------------------------------------------------


@dataclass
class Fixture:
    """What the calls need: ids in each user's scope."""

    district: str
    station: str
    reading_site: str
    reading_device: str
    users: dict[str, dict[str, Any]] = field(default_factory=dict)


def _ids(conn: psycopg.Connection[Any], sql: str, *params: Any) -> list[Any]:
    return [r[0] for r in conn.execute(sql, params).fetchall()]


def prepare(dsn: str) -> Fixture:
    """The two accounts (city and district) and, per user, the ids its calls rotate over."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT r.site_id, r.device_id, s.jurisdiction_id FROM rollups_1h r"
            " JOIN sites s ON s.id = r.site_id ORDER BY r.site_id, r.device_id LIMIT 1"
        ).fetchone()
        assert row is not None, "no readings seeded"
        site, device, station = row
        district = station.split("-")[0]
        fx = Fixture(district, station, site, device)
        for user, node in ((ROOT_USER, "city"), (DISTRICT_USER, district)):
            under = f"/city/{district}/%" if node != "city" else "/city/%"
            sites_sql = ("SELECT s.id FROM sites s JOIN jurisdictions j"
                         " ON j.id = s.jurisdiction_id WHERE j.path LIKE %s")
            fx.users[user] = {
                "node": node,
                "incidents": _ids(conn, f"SELECT id FROM incidents WHERE site_id IN"
                                        f" ({sites_sql}) ORDER BY md5(id::text) LIMIT 50",
                                  under),
                "alerts": _ids(conn, f"SELECT id FROM alerts WHERE site_id IN ({sites_sql})"
                                     " ORDER BY md5(id::text) LIMIT 50", under),
                "sites": _ids(conn, f"{sites_sql} ORDER BY md5(s.id) LIMIT 50", under),
                "q": _ids(conn, f"SELECT s.name FROM sites s"
                                f" WHERE s.id IN ({sites_sql}) ORDER BY s.id LIMIT 1",
                          under)[0],
                "jurisdiction": district if node == "city" else station,
            }
    asyncio.run(_accounts(dsn, district))
    return fx


async def _accounts(dsn: str, district: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for user, node, role in ((ROOT_USER, "city", "supervisor"),
                                 (DISTRICT_USER, district, "staff")):
            cur = await conn.execute("SELECT 1 FROM users WHERE username = %s", (user,))
            if await cur.fetchone() is None:
                await accounts.create_user(conn, "system", username=user, password=PASSWORD,
                                           role=role, jurisdiction_id=node)


@contextmanager
def api_server(dsn: str, log_path: Path) -> Iterator[str]:
    """``ganzhi api`` as a subprocess on a free port; yields its base URL."""
    port = free_port()
    env = {**os.environ, "GANZHI_DB__DSN": dsn, "GANZHI_AUTH__JWT_SECRET": JWT_SECRET,
           "GANZHI_AUTH__ACCESS_TTL_S": "3600", "GANZHI_API__PORT": str(port),
           "GANZHI_LOG_JSON": "true", "GANZHI_LOG_LEVEL": "WARNING"}
    with log_path.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ganzhi.cli", "api"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        terminate(proc, 20)


# --- the console's calls ----------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    name: str
    path: str  # may contain {id}, {alert}, {site}: rotated over the user's ids
    params: tuple[tuple[str, str], ...] = ()


def console_calls(fx: Fixture, user: str, before_id: int | None) -> list[Call]:
    u = fx.users[user]
    now = time.time()

    def iso(seconds_ago: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - seconds_ago))

    readings = f"/api/v1/devices/{fx.reading_site}/{fx.reading_device}/readings"
    calls = [
        Call("auth/me", "/api/v1/auth/me"),
        Call("incidents", "/api/v1/incidents"),
        Call("incidents severity=critical", "/api/v1/incidents", (("severity", "critical"),)),
        Call("incidents status=open", "/api/v1/incidents", (("status", "open"),)),
        Call("incidents jurisdiction", "/api/v1/incidents",
             (("jurisdiction", u["jurisdiction"]),)),
        Call("incidents q=<site name>", "/api/v1/incidents", (("q", u["q"]),)),
        Call("incidents q=<rule>", "/api/v1/incidents", (("q", "door_open"),)),
        Call("incidents open+critical+q", "/api/v1/incidents",
             (("status", "open"), ("severity", "critical"), ("q", "trapped"))),
        Call("incidents page 2", "/api/v1/incidents",
             (("before_id", str(before_id)),) if before_id else ()),
        Call("incident detail", "/api/v1/incidents/{id}"),
        Call("alert detail", "/api/v1/alerts/{alert}"),
        Call("readings 6 h raw", readings,
             (("metric", "temperature"), ("from", iso(6 * 3600)), ("to", iso(0)))),
        Call("readings 7 d 1m", readings,
             (("metric", "temperature"), ("from", iso(7 * 86400)), ("to", iso(0)),
              ("limit", "10000"))),
        Call("readings 90 d 1h", readings,
             (("metric", "temperature"), ("from", iso(90 * 86400)), ("to", iso(0)),
              ("limit", "10000"))),
        Call("site devices", "/api/v1/sites/{site}/devices"),
        Call("site", "/api/v1/sites/{site}"),
        Call("sites", "/api/v1/sites"),
        Call("jurisdictions", "/api/v1/jurisdictions"),
        Call("stats/overview", "/api/v1/stats/overview"),
        Call("stats/risk", "/api/v1/stats/risk", (("days", "30"), ("limit", "50"))),
        Call("stats/trend (scope)", "/api/v1/stats/trend", (("days", "30"),)),
        Call("stats/trend (site)", "/api/v1/stats/trend",
             (("days", "30"), ("site_id", fx.reading_site))),
        Call("stats/handling", "/api/v1/stats/handling", (("group_by", "site"),)),
    ]
    return calls


@dataclass
class Result:
    user: str
    name: str
    statuses: dict[int, int] = field(default_factory=dict)
    times_ms: list[float] = field(default_factory=list)
    missing: bool = False
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.missing and set(self.statuses) == {200}

    def pct(self, p: float) -> float:
        if not self.times_ms:
            return math.nan
        ordered = sorted(self.times_ms)
        return ordered[min(len(ordered) - 1, math.ceil(p * len(ordered)) - 1)]


def _login(client: httpx.Client, user: str) -> str:
    r = client.post("/api/v1/auth/login", json={"username": user, "password": PASSWORD})
    r.raise_for_status()
    token: str = r.json()["access_token"]
    return token


def _query_params(client: httpx.Client) -> dict[str, set[str]]:
    """Query parameter names per GET path, from the API's OpenAPI."""
    r = client.get("/openapi.json")
    if r.status_code != 200:
        return {}
    out: dict[str, set[str]] = {}
    for path, ops in r.json().get("paths", {}).items():
        get = ops.get("get")
        if get is not None:
            out[path] = {p["name"] for p in get.get("parameters", []) if p.get("in") == "query"}
    return out


def measure(base_url: str, fx: Fixture, n: int, warmup: int, log: Log = _stderr
            ) -> list[Result]:
    """Each call of each user ``warmup`` times untimed, then ``n`` times timed, one request
    at a time, rotating over the user's ids."""
    results: list[Result] = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        known = _query_params(client)
        for user in (ROOT_USER, DISTRICT_USER):
            u = fx.users[user]
            client.headers["Authorization"] = f"Bearer {_login(client, user)}"
            first = client.get("/api/v1/incidents")
            before_id = first.json().get("next_before_id") if first.status_code == 200 else None
            for call in console_calls(fx, user, before_id):
                res = Result(user, call.name)
                template = call.path.replace("{id}", "{incident_id}").replace(
                    "{alert}", "{alert_id}").replace("{site}", "{site_id}")
                template = template.replace(f"/{fx.reading_site}/{fx.reading_device}/",
                                            "/{site_id}/{device_id}/")
                if known and template not in known:
                    res.missing = True
                    res.note = "missing"
                    results.append(res)
                    log(f"  {user:15} {call.name:28} missing")
                    continue
                unknown = sorted({k for k, _ in call.params} - known.get(template, set()))
                if known and unknown:
                    res.note = f"ignores {','.join(unknown)}"
                for i in range(warmup + n):
                    path = call.path.format(
                        id=u["incidents"][i % len(u["incidents"])],
                        alert=u["alerts"][i % len(u["alerts"])],
                        site=u["sites"][i % len(u["sites"])])
                    started = time.perf_counter()
                    r = client.get(path, params=list(call.params))
                    r.read()
                    elapsed = (time.perf_counter() - started) * 1000
                    if i >= warmup:
                        res.times_ms.append(elapsed)
                        res.statuses[r.status_code] = res.statuses.get(r.status_code, 0) + 1
                    if r.status_code != 200 and not res.note:
                        res.note = f"{r.status_code}: {r.text[:120]}"
                results.append(res)
                log(f"  {user:15} {call.name:28} p95 {res.pct(0.95):7.1f} ms")
    return results


def table(results: list[Result]) -> str:
    lines = ["| user | call | n | p50 ms | p95 ms | max ms | p95 / 50 ms | |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.missing:
            lines.append(f"| {r.user} | {r.name} | - | - | - | - | - | missing |")
            continue
        p95 = r.pct(0.95)
        flag = "**over 50 ms**" if p95 > TARGET_MS else ""
        if not r.ok:
            flag = (flag + " " + ", ".join(f"{k}x{v}" for k, v in r.statuses.items())).strip()
        if r.note:
            flag = (flag + " " + r.note).strip()
        lines.append(f"| {r.user} | {r.name} | {len(r.times_ms)} | {r.pct(0.5):.1f} |"
                     f" {p95:.1f} | {max(r.times_ms):.1f} | {p95 / TARGET_MS:.2f} | {flag} |")
    return "\n".join(lines)


def run(dsn: str, sizes: Sizes, *, n: int, warmup: int, work: Path, seeded: bool = False,
        log: Log = _stderr) -> tuple[dict[str, int], list[Result]]:
    """Seed (unless ``seeded``), start the API, replay the calls; counts and results."""
    counts = {} if seeded else seed(dsn, sizes, log)
    fx = prepare(dsn)
    with api_server(dsn, work / "api.log") as url:
        results = measure(url, fx, n, warmup, log)
    return counts, results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=100_000)
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--sites", type=int, default=500)
    ap.add_argument("-n", "--requests", type=int, default=200, help="timed, per call and user")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 5,000 alerts, 50,000 readings, 30 requests")
    ap.add_argument("--data-dir", type=Path,
                    help="keep the cluster here; a second run with the same sizes reuses it")
    ap.add_argument("--keep", action="store_true", help="leave the cluster's files behind")
    args = ap.parse_args()
    if args.quick:
        args.alerts, args.readings, args.requests, args.warmup = 5_000, 50_000, 30, 5
    sizes = Sizes(args.alerts, args.readings, args.sites)

    root = args.data_dir or Path(tempfile.mkdtemp(prefix="ganzhi-bench-console-"))
    root.mkdir(parents=True, exist_ok=True)
    marker = root / "seeded.json"
    want = {"alerts": sizes.alerts, "readings": sizes.readings, "sites": sizes.sites}
    pg = start_postgres(root / "data")
    try:
        dsn = pg.extra["dsn"]
        seeded = marker.exists() and json.loads(marker.read_text()).get("sizes") == want
        if marker.exists() and not seeded:
            raise SystemExit(f"{root} holds other sizes: {marker.read_text()}")
        migrate(dsn)
        started = time.perf_counter()
        counts, results = run(dsn, sizes, n=args.requests, warmup=args.warmup, work=root,
                              seeded=seeded)
        if counts:
            marker.write_text(json.dumps({"sizes": want, "counts": counts}))
        else:
            counts = json.loads(marker.read_text())["counts"]
        print(f"\ndata: {', '.join(f'{k} {v:,}' for k, v in counts.items())}")
        print(f"requests: {args.requests} timed per call and user after {args.warmup}"
              f" warm-up, one at a time ({time.perf_counter() - started:.0f} s in all)\n")
        print(table(results))
        slow = [r for r in results if not r.missing and r.pct(0.95) > TARGET_MS]
        broken = [r for r in results if not r.missing and not r.ok]
        missing = sorted({r.name for r in results if r.missing})
        print(f"\nover {TARGET_MS:.0f} ms at p95: {len(slow)}; not all 200: {len(broken)};"
              f" missing: {', '.join(missing) or 'none'}")
    finally:
        pg.stop()
        if not (args.keep or args.data_dir):
            shutil.rmtree(root, ignore_errors=True)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
