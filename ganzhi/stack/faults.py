"""``ganzhi faults``: the whole system under load while its parts die, then a count.

A workload of cold-room telemetry (every device has a scripted excursion every ten
minutes of event time) goes through the real edge path - an on-disk spool and one MQTT
connection per device, as on an edge box - into the stack (:mod:`ganzhi.stack.system`).
While it flows, the faults are injected one after another: ``kill -9`` of ingest, the
stream worker, the alerts service and the API, each restarted at once as a supervisor
would; a restart of PostgreSQL and of Mosquitto (both with their persistence). For
each fault the run measures how long until that part's work moves again.

When the load has drained, it checks what a supervision office must be able to trust:

* every reading stored exactly once (``msg_id`` and rows);
* every alert the rules produce on this data - computed here by the same rule engine
  over the same messages in order - exists exactly once, none extra, and no device is
  called offline (none stopped sending: a backlog after a restart is not silence);
* every clue event in the outbox was delivered, and the task system (the reference
  receiver) accepted each idempotency key once;
* no service exited other than by the injected kills.

``--profile short`` is the CI test (tests/e2e/test_faults.py); ``--profile full`` runs
100,000 messages and writes the figures recorded in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from edge.spool import Spool
from edge.uplink import BrokerEndpoint, DeviceUplink
from ganzhi.contracts import (
    Channel,
    DeviceClass,
    Reading,
    Telemetry,
    TransitionKind,
    mqtt_topic,
)
from ganzhi.db.migrate import migrate
from ganzhi.kafka import ensure_topics
from ganzhi.observability import get_logger
from ganzhi.settings import ColdChainRuleSettings, KafkaSettings
from ganzhi.stack.system import Ports, Secrets, Stack

log = get_logger("faults")

SITE = "faults"
STEP_S = 10  # event time between two messages of one device
PERIOD = 60  # messages per excursion cycle (ten minutes of event time)
EXCURSION = range(20, 34)  # positions in the cycle above the limit (140 s)
RULE_TIMERS = {"duration_s": 60.0, "clear_duration_s": 60.0}
# The workload's rooms are chilled; a variant is never guessed (docs/rules.md).
RULES_DOC = {"cold_store": {"defaults": {"variant": "chilled"}}}
FAULTS = ("ingest", "stream", "alerts", "api", "postgres", "mosquitto")
RESUME_LIMIT_S = 30.0


@dataclass(frozen=True)
class Profile:
    messages: int
    devices: int
    rate: float  # messages per second offered
    faults: tuple[str, ...] = FAULTS


PROFILES = {
    "short": Profile(messages=6_000, devices=12, rate=70.0),
    "full": Profile(messages=100_000, devices=50, rate=450.0),
}


# --- the workload and what the rules must make of it -------------------------------------


def workload(profile: Profile, t0: datetime) -> list[Telemetry]:
    """Messages in publishing order (round robin over the devices)."""
    per_device = profile.messages // profile.devices
    out: list[Telemetry] = []
    for k in range(per_device):
        for d in range(profile.devices):
            phase = (k + 7 * d) % PERIOD
            temp = 12.0 if phase in EXCURSION else 3.0 + ((k * 31 + d) % 10) / 10
            out.append(Telemetry(
                msg_id=uuid.uuid4(), site_id=SITE, device_id=f"room-{d:03d}",
                ts=t0 + timedelta(seconds=STEP_S * k), device_class=DeviceClass.COLD_STORE,
                readings=[Reading(metric="temperature", value=temp, unit="celsius"),
                          Reading(metric="door_open", value=0.0, unit="bool")]))
    return out


AlertKey = tuple[str, str, str, datetime]  # site, device, rule, started_at


def expected_alerts(messages: Sequence[Telemetry]) -> set[AlertKey]:
    """What the stream's rules make of ``messages`` delivered once, in order: the same
    engine with in-memory adapters (device liveness aside: it is processing time)."""
    from stream.engine import RuleEngine
    from stream.memory import MemoryAdapters
    from stream.processor import BatchProcessor, Incoming
    from stream.rules.device_health import RULE_ID as OFFLINE
    from stream.rules.model import Rules, RulesDoc

    mem = MemoryAdapters()
    rules = Rules(RulesDoc.model_validate(RULES_DOC), ColdChainRuleSettings(**RULE_TIMERS))
    proc = BatchProcessor(RuleEngine(lambda: rules, lambda s, d: 0), mem, mem, mem.send,
                          dead_letter=mem.dead_letter)

    async def feed() -> None:
        for i in range(0, len(messages), 500):
            await proc.process([Incoming(0, m.model_dump_json().encode())
                                for m in messages[i:i + 500]])

    asyncio.run(feed())
    if mem.dead:
        raise RuntimeError(f"the workload itself was refused: {mem.dead[0].error}")
    return {(t.site_id, t.device_id, t.rule_id, t.started_at) for t in mem.transitions
            if t.kind is TransitionKind.FIRING and t.rule_id != OFFLINE}


# --- the load: the edge box's own path (spool + one uplink per device) ---------------------


class Loader:
    """Appends the workload to a spool at the offered rate; uplinks drain it."""

    def __init__(self, stack: Stack, messages: list[Telemetry], profile: Profile) -> None:
        self.messages = messages
        self.rate = profile.rate
        self.spool = Spool(stack.root / "loader" / "spool.db")
        endpoint = BrokerEndpoint("127.0.0.1", stack.ports.mqtt)
        devices = sorted({m.device_id for m in messages})
        self.uplinks = [DeviceUplink(self.spool, endpoint, SITE, d, None, None, window=100,
                                     report_period_s=STEP_S) for d in devices]
        self.appended = 0
        self._thread = threading.Thread(target=self._run, name="loader", daemon=True)

    def start(self) -> Loader:
        for u in self.uplinks:
            u.start()
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        while self.appended < len(self.messages):
            due = min(len(self.messages), int((time.monotonic() - started) * self.rate) + 1)
            if due > self.appended:
                chunk = self.messages[self.appended:due]
                self.spool.append_many([
                    (m.device_id, mqtt_topic(m.site_id, m.device_id, Channel.TELEMETRY),
                     m.model_dump_json().encode()) for m in chunk])
                self.appended = due
            time.sleep(0.05)

    @property
    def done(self) -> bool:
        return self.appended >= len(self.messages)

    def stop(self) -> None:
        for u in self.uplinks:
            u.request_stop()
        for u in self.uplinks:
            u.stop()
        self.spool.close()


# --- probes --------------------------------------------------------------------------


def metric(port: int, name: str) -> float | None:
    """Sum of a Prometheus counter's samples at ``port``; None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def health(port: int, path: str = "/healthz") -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            body: dict[str, Any] = json.load(r)
            return body
    except (OSError, ValueError):
        return None


def scalar(dsn: str, query: str) -> Any:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            row = conn.execute(query.encode()).fetchone()
            return row[0] if row else None
    except psycopg.Error:
        return None


@dataclass
class FaultResult:
    fault: str
    at_s: float  # since the load began
    down_s: float  # how long the part was away (restart included)
    resumed_s: float | None  # from the fault to that part's work moving again
    ok: bool = False


@dataclass
class Report:
    profile: str
    messages: int
    devices: int
    rate: float
    elapsed_s: float = 0.0
    readings_rows: int = 0
    readings_expected: int = 0
    messages_stored: int = 0
    readings_lost: int = 0
    alerts_expected: int = 0
    alerts_found: int = 0
    alerts_missing: int = 0
    alerts_extra: int = 0
    offline_alerts: int = 0
    clue_events: int = 0
    clue_events_undelivered: int = 0
    receiver_keys: int = 0
    receiver_deliveries: int = 0
    receiver_duplicate_deliveries: int = 0
    receiver_keys_not_in_outbox: int = 0
    unplanned_exits: list[str] = field(default_factory=list)
    faults: list[FaultResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.readings_rows == self.readings_expected and self.readings_lost == 0
                and self.alerts_missing == 0 and self.alerts_extra == 0
                and self.offline_alerts == 0
                and self.clue_events_undelivered == 0 and self.receiver_keys == self.clue_events
                and self.receiver_keys_not_in_outbox == 0 and not self.unplanned_exits
                and all(f.ok for f in self.faults))

    def table(self) -> str:
        lines = [
            f"profile {self.profile}: {self.messages} messages from {self.devices} devices at "
            f"{self.rate:.0f} msg/s offered, {self.elapsed_s:.0f} s",
            f"  readings   stored {self.readings_rows} of {self.readings_expected} rows, "
            f"{self.messages_stored} messages, lost {self.readings_lost}",
            f"  alerts     expected {self.alerts_expected}, found {self.alerts_found}, "
            f"missing {self.alerts_missing}, extra {self.alerts_extra}; "
            f"device.offline {self.offline_alerts} (no device stopped sending)",
            f"  clues      {self.clue_events} events, undelivered "
            f"{self.clue_events_undelivered}; receiver took {self.receiver_keys} keys once "
            f"from {self.receiver_deliveries} deliveries "
            f"({self.receiver_duplicate_deliveries} repeats absorbed)",
            f"  exits      {', '.join(self.unplanned_exits) or 'none but the injected kills'}",
            "  fault        at (s)   down (s)   resumed after (s)",
        ]
        for f in self.faults:
            resumed = f"{f.resumed_s:8.1f}" if f.resumed_s is not None else "   never"
            lines.append(f"  {f.fault:<10} {f.at_s:8.1f} {f.down_s:10.1f} {resumed:>14}"
                         f"   {'ok' if f.ok else 'OVER ' + str(RESUME_LIMIT_S) + ' s'}")
        lines.append("  RESULT: " + ("ok" if self.ok else "FAILED"))
        return "\n".join(lines)


# --- the run -------------------------------------------------------------------------


class FaultRun:
    def __init__(self, root: Path, profile_name: str) -> None:
        self.profile = PROFILES[profile_name]
        self.report = Report(profile_name, self.profile.messages, self.profile.devices,
                             self.profile.rate)
        env = {f"GANZHI_STREAM__COLD_CHAIN__{k.upper()}": str(v) for k, v in RULE_TIMERS.items()}
        env.update({
            "GANZHI_LOG_LEVEL": "INFO", "GANZHI_STREAM__BATCH_WITHIN_S": "0.2",
            "GANZHI_WEBHOOK__BACKOFF_BASE_S": "0.2", "GANZHI_WEBHOOK__BACKOFF_MAX_S": "5",
            "GANZHI_WEBHOOK__POLL_INTERVAL_S": "0.2", "GANZHI_KAFKA__PARTITIONS": "4",
        })
        root.mkdir(parents=True, exist_ok=True)
        rules_file = root / "fault-rules.yaml"
        rules_file.write_text(json.dumps(RULES_DOC) + "\n")  # JSON is YAML
        env["GANZHI_STREAM__RULES_FILE"] = str(rules_file)
        self.stack = Stack(root, Ports.choose(), Secrets.generate(), extra_env=env)
        self.killed: set[str] = set()
        self.started = 0.0

    def _progress(self, fault: str) -> Callable[[], float | None]:
        p, dsn = self.stack.ports, self.stack.dsn
        if fault == "ingest":
            return lambda: metric(p.ops_ingest, "ganzhi_ingest_acked_total")
        if fault == "mosquitto":  # messages received again over a new subscription
            return lambda: (metric(p.ops_ingest, "ganzhi_ingest_received_total")
                            if (health(p.ops_ingest) or {}).get("subscribed") else None)
        if fault == "stream":
            return lambda: metric(p.ops_stream, "ganzhi_stream_readings_written_total")
        if fault == "alerts":
            return lambda: (health(p.ops_alerts) or {}).get("transitions_applied")
        if fault == "api":
            return lambda: 1.0 if (health(p.api) or {}).get("ok") else None
        return lambda: scalar(dsn, "SELECT count(*) FROM readings")  # postgres

    def inject(self, fault: str) -> FaultResult:
        probe = self._progress(fault)
        before = probe() or 0.0
        t = time.monotonic()
        log.info("fault", fault=fault)
        if fault == "postgres":
            down = self.stack.restart_postgres()
        elif fault == "mosquitto":
            down = self.stack.restart_mosquitto()
            before = probe() or before  # ingest notices the new broker a second later
        else:
            self.stack.kill(fault)
            self.killed.add(fault)
            before = 0.0  # the new process counts from zero
            self.stack.restart(fault, wait=False)
            down = time.monotonic() - t
        resumed = None
        while time.monotonic() - t < 120:
            value = probe()
            if value is not None and value > before:
                resumed = time.monotonic() - t
                break
            time.sleep(0.2)
        result = FaultResult(fault, t - self.started, round(down, 2),
                             None if resumed is None else round(resumed, 2))
        result.ok = resumed is not None and resumed <= RESUME_LIMIT_S
        print(f"\n  {fault}: down {result.down_s} s, work moved again after "
              f"{result.resumed_s} s", file=sys.stderr)
        return result

    def watch_services(self) -> None:
        for name, svc in self.stack.services.items():
            if not svc.alive() and svc.proc is not None and svc.proc.returncode is not None:
                code = svc.proc.returncode
                if name in self.killed and code == -9:
                    continue
                self.report.unplanned_exits.append(f"{name} (exit {code})")
                log.error("service_exited", service=name, exit=code)
                self.stack.restart(name, wait=False)

    def run(self) -> Report:
        stack, prof = self.stack, self.profile
        t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(
            seconds=STEP_S * (prof.messages // prof.devices) + 3600)
        messages = workload(prof, t0)
        print(f"computing the expected alerts of {len(messages)} messages...", file=sys.stderr)
        expected = expected_alerts(messages)
        stack.start_infrastructure()
        migrate(stack.dsn)
        stack.use_api_roles()
        asyncio.run(ensure_topics(KafkaSettings(bootstrap=stack.bootstrap, partitions=4)))
        for name in ("receiver", "api", "alerts", "stream", "ingest"):
            stack.start_service(name)
        loader = Loader(stack, messages, prof).start()
        self.started = time.monotonic()
        try:
            for i, fault in enumerate(prof.faults):
                target = len(messages) * (i + 1) // (len(prof.faults) + 1)
                while loader.appended < target:
                    self.watch_services()
                    self._progress_line(loader)
                    time.sleep(0.5)
                self.report.faults.append(self.inject(fault))
            self._drain(loader, len(messages), len(expected))
        finally:
            self.report.elapsed_s = round(time.monotonic() - self.started, 1)
            self._count(messages, expected)
            loader.stop()
            codes = stack.stop()
            for name, code in codes.items():
                if code not in (0, None) and name not in self.report.unplanned_exits:
                    self.report.unplanned_exits.append(f"{name} (stop exit {code})")
            print(file=sys.stderr)
        return self.report

    def _progress_line(self, loader: Loader) -> None:
        rows = scalar(self.stack.dsn, "SELECT count(*) FROM readings") or 0
        print(f"\r  published {loader.appended}/{len(loader.messages)}  stored readings "
              f"{rows}  spool {loader.spool.depth()}   ", end="", file=sys.stderr, flush=True)

    def _drain(self, loader: Loader, n: int, alerts: int, timeout: float = 300) -> None:
        """Until every message is stored and every clue delivered (or the timeout)."""
        deadline = time.monotonic() + timeout
        dsn = self.stack.dsn
        while time.monotonic() < deadline:
            self.watch_services()
            self._progress_line(loader)
            stored = scalar(dsn, "SELECT count(DISTINCT msg_id) FROM readings") or 0
            found = scalar(dsn, "SELECT count(*) FROM alerts WHERE rule_id <> 'device.offline'")
            pending = scalar(dsn, "SELECT count(*) FROM clue_outbox WHERE status <> 'delivered'")
            if loader.done and stored >= n and (found or 0) >= alerts and pending == 0:
                time.sleep(2)  # a last look: nothing more should arrive
                return
            time.sleep(1)
        log.error("drain_timed_out")

    def _count(self, messages: list[Telemetry], expected: set[AlertKey]) -> None:
        r, dsn = self.report, self.stack.dsn
        r.readings_expected = sum(len(m.readings) for m in messages)
        r.readings_rows = int(scalar(dsn, "SELECT count(*) FROM readings") or 0)
        r.messages_stored = int(scalar(dsn, "SELECT count(DISTINCT msg_id) FROM readings") or 0)
        r.readings_lost = len(messages) - r.messages_stored
        found: list[AlertKey] = []
        with psycopg.connect(dsn) as conn:
            for site, device, rule, started in conn.execute(
                    "SELECT site_id, device_id, rule_id, started_at FROM alerts"
                    " WHERE rule_id <> 'device.offline'"):
                found.append((site, device, rule, started))
            row = conn.execute(
                "SELECT count(*) FROM alerts WHERE rule_id = 'device.offline'").fetchone()
            r.offline_alerts = int(row[0]) if row else 0
            outbox = {key: status for key, status in conn.execute(
                "SELECT idempotency_key, status FROM clue_outbox"
                " WHERE receiver = 'task-system'")}
        r.alerts_expected, r.alerts_found = len(expected), len(found)
        r.alerts_missing = len(expected - set(found))
        r.alerts_extra = len(found) - len(set(found)) + len(set(found) - expected)
        r.clue_events = len(outbox)
        r.clue_events_undelivered = sum(1 for s in outbox.values() if s != "delivered")
        got = health(self.stack.ports.receiver, "/clues") or {}
        keys = list(got.get("keys", []))
        counts = got.get("counts", {})
        r.receiver_keys = len(keys)
        r.receiver_deliveries = int(counts.get("deliveries", 0))
        r.receiver_duplicate_deliveries = r.receiver_deliveries - len(keys) - int(
            counts.get("rejected", 0)) - int(counts.get("ignored", 0))
        r.receiver_keys_not_in_outbox = len(set(keys) - set(outbox))


def run(root: Path, profile: str, report_path: Path | None) -> int:
    from ganzhi.observability import configure_logging

    configure_logging("WARNING", json_lines=False)

    def interrupted(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through the run's cleanup: everything stops

    signal.signal(signal.SIGTERM, interrupted)
    report = FaultRun(root, profile).run()
    print(report.table())
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps({**asdict(report), "ok": report.ok}, indent=2,
                                          default=str))
    return 0 if report.ok else 1
