"""``ganzhi demo``: the whole system on one machine, started and stopped as one.

Order: infrastructure (Mosquitto, Tansu, PostgreSQL; each reused when something already
listens on its configured port), migrations and topics, then the services (a stand-in
task system receiving clues, api, alerts, stream, ingest), then an edge agent
(``ganzhi edge``) with three simulated cold rooms, spooling to disk like a real box.
Ctrl-C or SIGTERM stops everything in reverse order. A service that dies is restarted
with backoff, a few times, and its log tells why.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from ganzhi.db.migrate import migrate
from ganzhi.kafka import ensure_topics
from ganzhi.observability import configure_logging, get_logger
from ganzhi.settings import Settings
from ganzhi.stack.infra import (
    InfraError,
    Managed,
    create_database,
    drop_database,
    port_open,
    start_mosquitto,
    start_postgres,
    start_tansu,
    terminate,
)

log = get_logger("demo")
MAX_RESTARTS = 5


@dataclass
class Service:
    name: str
    argv: list[str]
    health_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    log_path: Path = field(default_factory=Path)

    def start(self, env: dict[str, str], logs: Path) -> None:
        self.log_path = logs / f"{self.name}.log"
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def stop(self, timeout: float = 20.0) -> None:
        if terminate(self.proc, timeout):
            log.warning("service_killed", service=self.name, after_s=timeout)


def _host_port(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host or "127.0.0.1", int(port)


def start_infrastructure(
    settings: Settings, data_dir: Path, keep_data: bool = False
) -> list[Managed]:
    parts: list[Managed] = []
    mq = settings.mqtt
    if port_open(mq.host, mq.port):
        log.info("reuse", part="mqtt", address=f"{mq.host}:{mq.port}")
    else:
        parts.append(start_mosquitto(data_dir / "mosquitto", mq.host, mq.port))
    khost, kport = _host_port(settings.kafka.bootstrap)
    if port_open(khost, kport):
        log.info("reuse", part="kafka", address=settings.kafka.bootstrap)
    else:
        parts.append(start_tansu(data_dir / "logs", khost, kport))
    db = conninfo_to_dict(settings.db.dsn.get_secret_value())
    dhost, dport = str(db.get("host", "127.0.0.1")), int(str(db.get("port", 5432)))
    if port_open(dhost, dport):
        log.info("reuse", part="postgres", address=f"{dhost}:{dport}")
    else:
        pg = start_postgres(
            data_dir / "postgres", dhost, dport,
            user=str(db.get("user", "ganzhi")), database=str(db.get("dbname", "ganzhi")),
        )
        parts.append(pg)
        if not keep_data:
            # Tansu starts empty (memory only), so rule state is gone: start the demo's own
            # database empty too, or old open alerts would absorb the new run's.
            name = str(db.get("dbname", "ganzhi"))
            drop_database(pg.extra["admin_dsn"], name)
            create_database(pg.extra["admin_dsn"], name)
    for p in parts:
        log.info("started", part=p.name, address=f"{p.host}:{p.port}", log=str(p.log_path))
    return parts


def service_env(settings: Settings, data_dir: Path, receiver_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GANZHI_STREAM__DATA_DIR", str(data_dir / "stream"))
    if settings.webhook.url is None:
        env["GANZHI_WEBHOOK__URL"] = f"http://127.0.0.1:{receiver_port}/clues"
    # Short rule timers so the demo shows a whole excursion within a minute; production
    # keeps the 10-minute default (or a site's own value).
    env.setdefault("GANZHI_STREAM__COLD_CHAIN__DURATION_S", "20")
    env.setdefault("GANZHI_STREAM__COLD_CHAIN__CLEAR_DURATION_S", "20")
    env.setdefault("GANZHI_STREAM__RULES_FILE", str(demo_rules_file(data_dir)))
    env.setdefault("GANZHI_LOG_JSON", "true")
    return env


def demo_rules_file(data_dir: Path) -> Path:
    """The demo's rules model: its devices are expected (offline 30 s after they fall
    silent, even if they never connected). Edit it while the demo runs: the stream worker
    applies a change within seconds."""
    import yaml

    rules = {"device_health": {"devices": {
        f"demo-site/cold-room-{i:02d}": {"expected_interval_s": 10} for i in (1, 2, 3)}}}
    path = data_dir / "stream" / "demo-rules.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


MODELS = Path(__file__).resolve().parents[2] / "models"


def demo_kitchen_video(folder: Path, seconds: int = 90, fps: int = 10) -> Path:
    """A synthetic kitchen camera: a lit counter with a cook walking past, and from 20 s
    to 60 s something over the lens. The camera agent loops it; its health check raises
    ``camera_covered`` with a snapshot, and clears it when the picture is back."""
    import cv2
    import numpy as np

    path = folder / "demo-kitchen.avi"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    w, h = 480, 360
    out = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
    rng = np.random.default_rng(7)
    ramp = np.tile(np.linspace(70, 210, w, dtype=np.uint8), (h, 1))
    base = np.asarray(cv2.merge([ramp, ramp, ramp]), dtype=np.uint8)
    cv2.rectangle(base, (20, 240), (460, 300), (60, 60, 60), -1)  # counter
    cv2.rectangle(base, (40, 40), (170, 150), (225, 225, 225), -1)  # hood
    cv2.putText(base, "ganzhi demo kitchen", (250, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                (30, 30, 30), 1, cv2.LINE_AA)
    for i in range(seconds * fps):
        t = i / fps
        if 20 <= t < 60:
            frame = np.full((h, w, 3), 6, np.uint8)  # covered lens
        else:
            frame = base.copy()
            x = int(20 + (t * 40) % (w - 80))
            cv2.rectangle(frame, (x, 110), (x + 50, 300), (40, 80, 190), -1)  # the cook
            cv2.circle(frame, (x + 25, 90), 22, (150, 180, 220), -1)
        noise = rng.integers(-3, 4, frame.shape, dtype=np.int16)
        out.write(np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    out.release()
    return path


def demo_edge_config(settings: Settings, data_dir: Path) -> Path:
    """An edge box with three simulated cold rooms; one loses its compressor for a minute."""
    import yaml

    normal: dict[str, object] = {}
    failing = {"start_c": 6.5, "warming_per_s": 0.005, "cooling_c_per_s": 0.3,
               "failure_at_s": 0.0, "failure_for_s": 60.0}
    devices = [
        {
            "device_id": f"cold-room-{i:02d}", "device_class": "cold_store",
            "sample_interval_s": 2, "report": {"period_s": 10},
            "source": {"type": "simulator", "kind": "cold_room", "seed": i, "step_s": 2,
                       "spec": failing if i == 3 else normal},
        }
        for i in (1, 2, 3)
    ]
    camera = {
        "device_id": "kitchen-cam-01", "source": str(demo_kitchen_video(data_dir / "edge")),
        "loop": True, "fps": 5, "model_dir": str(MODELS / "ppe"),
    }
    config = {
        "site_id": "demo-site",
        "broker": {"host": settings.mqtt.host, "port": settings.mqtt.port},
        "spool": {"path": str(data_dir / "edge" / "spool.db")},
        "metrics_port": settings.ops.edge,
        "devices": devices,
        "cameras": [camera],
    }
    path = data_dir / "edge" / "demo-box.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def demo_services(settings: Settings, receiver_port: int, edge_config: Path) -> list[Service]:
    cli = [sys.executable, "-m", "ganzhi.cli"]
    return [
        Service("receiver", [*cli, "receiver", "--port", str(receiver_port)], receiver_port),
        Service("api", [*cli, "api"], settings.api.port),
        Service("alerts", [*cli, "alerts"], settings.ops.alerts),
        Service("stream", [*cli, "stream"], settings.ops.stream),
        Service("ingest", [*cli, "ingest"], settings.ops.ingest),
        Service("edge", [*cli, "edge", "--config", str(edge_config)], settings.ops.edge),
    ]


def _wait_healthy(service: Service, timeout: float = 60.0) -> None:
    if service.health_port is None:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.proc is not None and service.proc.poll() is not None:
            raise InfraError(f"{service.name} exited; see {service.log_path}")
        if port_open("127.0.0.1", service.health_port):
            return
        time.sleep(0.2)
    raise InfraError(f"{service.name} did not come up in {timeout}s; see {service.log_path}")


def _print_new_alerts(api_port: int, seen: set[tuple[int, str]]) -> None:
    url = f"http://127.0.0.1:{api_port}/api/v1/alerts?limit=20"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            body = json.load(resp)
    except Exception:
        return
    items = body.get("items", body) if isinstance(body, dict) else body
    for alert in items:
        key = (int(alert["id"]), str(alert["status"]))
        if key in seen:
            continue
        seen.add(key)
        when = f"started {alert['started_at']}"
        if alert.get("ended_at"):
            when += f", ended {alert['ended_at']}"
        print(
            f"{time.strftime('%H:%M:%S')} [alert #{alert['id']} {alert['status']}]"
            f" {alert['site_id']}/{alert['device_id']} {alert['rule_id']}"
            f" ({alert['severity']}): {alert['summary']} ({when})",
            flush=True,
        )


def run_demo(
    settings: Settings,
    data_dir: str = "var",
    duration_s: float | None = None,
    keep_data: bool = False,
) -> int:
    configure_logging(settings.log_level, json_lines=False)
    root = Path(data_dir).resolve()
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    infra: list[Managed] = []
    services: list[Service] = []
    try:
        infra = start_infrastructure(settings, root, keep_data)
        applied = migrate(settings.db.dsn.get_secret_value())
        log.info("migrated", applied=applied)
        asyncio.run(ensure_topics(settings.kafka.bootstrap, settings.kafka.partitions))
        receiver_port = settings.demo.receiver_port
        env = service_env(settings, root, receiver_port)
        if not keep_data:
            for suffix in ("", "-wal", "-shm"):
                (root / "edge" / f"spool.db{suffix}").unlink(missing_ok=True)
        services = demo_services(settings, receiver_port, demo_edge_config(settings, root))
        for svc in services:
            svc.start(env, logs)
            _wait_healthy(svc)
            log.info("service_up", service=svc.name, log=str(svc.log_path))
        print(
            f"\nganzhi demo is running.\n"
            f"  alerts API:  http://127.0.0.1:{settings.api.port}/api/v1/alerts\n"
            f"  API docs:    http://127.0.0.1:{settings.api.port}/docs\n"
            f"  metrics:     ingest :{settings.ops.ingest}  stream :{settings.ops.stream}"
            f"  alerts :{settings.ops.alerts}  api :{settings.api.port}/metrics\n"
            f"  logs:        {logs}\n"
            f"One simulated cold room's compressor fails for a minute: its alert shows here"
            f" within a minute, and resolves about a minute after the repair."
            f"\nCtrl-C stops everything.\n",
            flush=True,
        )
        started = time.monotonic()
        seen: set[tuple[int, str]] = set()
        last_poll = 0.0
        while not stop:
            if duration_s is not None and time.monotonic() - started > duration_s:
                break
            for svc in services:
                if svc.proc is not None and svc.proc.poll() is not None:
                    _restart(svc, env, logs)
            if time.monotonic() - last_poll > 2:
                _print_new_alerts(settings.api.port, seen)
                last_poll = time.monotonic()
            time.sleep(0.2)
        return 0
    except InfraError as exc:
        log.error("demo_failed", error=str(exc))
        return 1
    finally:
        log.info("stopping")
        for svc in reversed(services):
            svc.stop()
            log.info("service_stopped", service=svc.name)
        for part in reversed(infra):
            part.stop()
            log.info("stopped", part=part.name)


def _restart(svc: Service, env: dict[str, str], logs: Path) -> None:
    now = time.monotonic()
    if svc.next_start == 0.0:
        code = svc.proc.returncode if svc.proc else None
        if svc.restarts >= MAX_RESTARTS:
            raise InfraError(f"{svc.name} keeps dying (exit {code}); see {svc.log_path}")
        svc.next_start = now + min(2**svc.restarts, 30)
        log.warning("service_died", service=svc.name, exit=code, log=str(svc.log_path))
    elif now >= svc.next_start:
        svc.restarts += 1
        svc.next_start = 0.0
        svc.start(env, logs)
        log.info("service_restarted", service=svc.name, restarts=svc.restarts)
