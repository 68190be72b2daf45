"""``ganzhi demo``: the whole system on one machine, started and stopped as one.

Order: infrastructure of its own (Mosquitto, Tansu, PostgreSQL on their configured ports,
or free ones when something else listens there: :mod:`ganzhi.stack.system` never reuses
a server it did not start), migrations and topics, then the services (a stand-in task
system receiving clues, api, alerts, stream, ingest), then an edge agent (``ganzhi
edge``) with three simulated cold rooms and a kitchen camera, spooling to disk like a
real box. The secrets every deployment needs (ingest share group, webhook key) are
generated once into ``var/secrets.env``. Ctrl-C or SIGTERM stops everything in reverse
order. A service that dies is restarted with backoff, a few times, and its log tells why.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
import urllib.request
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from alerts.repository import Conflict
from ganzhi import accounts, apikeys
from ganzhi.access import Role
from ganzhi.db.maintenance import maintain
from ganzhi.db.migrate import migrate
from ganzhi.kafka import ensure_topics
from ganzhi.observability import configure_logging, get_logger
from ganzhi.settings import Settings
from ganzhi.stack.infra import InfraError
from ganzhi.stack.system import Ports, Secrets, Service, Stack

log = get_logger("demo")
MAX_RESTARTS = 5


def _port_of(hostport: str) -> int:
    return int(hostport.rsplit(":", 1)[1])


def wanted_ports(settings: Settings) -> dict[str, int]:
    """The ports the settings name: the demo takes them where they are free."""
    db = conninfo_to_dict(settings.db.dsn.get_secret_value())
    return {
        "mqtt": settings.mqtt.port, "kafka": _port_of(settings.kafka.bootstrap),
        "postgres": int(str(db.get("port", 5433))), "api": settings.api.port,
        "receiver": settings.demo.receiver_port, "ops_ingest": settings.ops.ingest,
        "ops_stream": settings.ops.stream, "ops_alerts": settings.ops.alerts,
        "ops_edge": settings.ops.edge, "stream_web": settings.stream.web_port,
    }


def demo_env(data_dir: Path) -> dict[str, str]:
    """The demo's settings, under whatever GANZHI_* the user set."""
    env = {
        # Short rule timers so the demo shows a whole excursion within a minute;
        # production keeps the 10-minute default (or a site's own value).
        "GANZHI_STREAM__COLD_CHAIN__DURATION_S": "20",
        "GANZHI_STREAM__COLD_CHAIN__CLEAR_DURATION_S": "20",
        "GANZHI_STREAM__RULES_FILE": str(demo_rules_file(data_dir)),
    }
    env.update({k: v for k, v in os.environ.items() if k.startswith("GANZHI_")})
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


def demo_edge_config(ports: Ports, data_dir: Path) -> Path:
    """An edge box with three simulated cold rooms; one loses its compressor for a minute."""
    import yaml

    normal: dict[str, object] = {}
    failing = {"start_c": 6.5, "warming_per_s": 0.005, "cooling_c_per_s": 0.3,
               "failure_at_s": 0.0, "failure_for_s": 60.0}
    devices = [
        {
            "device_id": f"cold-room-{i:02d}", "device_class": "cold_store",
            "params": {"variant": "chilled", "set_point_c": 4.0},
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
        "broker": {"host": "127.0.0.1", "port": ports.mqtt},
        "spool": {"path": str(data_dir / "edge" / "spool.db")},
        "metrics_port": ports.ops_edge,
        "devices": devices,
        "cameras": [camera],
    }
    path = data_dir / "edge" / "demo-box.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _print_new_alerts(api_port: int, seen: set[tuple[int, str]], token: str) -> None:
    url = f"http://127.0.0.1:{api_port}/api/v1/alerts?limit=20"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
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


def write_demo_env(stack: Stack) -> Path:
    """``var/demo.env``: where the demo's parts listen, for the ``ganzhi`` commands
    (``set -a; . var/demo.env; set +a``). The secrets stay in ``var/secrets.env``."""
    env = stack.env()
    keys = ("GANZHI_MQTT__HOST", "GANZHI_MQTT__PORT", "GANZHI_KAFKA__BOOTSTRAP",
            "GANZHI_DB__DSN", "GANZHI_API__PORT", "GANZHI_STREAM__RULES_FILE")
    path = stack.root / "demo.env"
    path.write_text("".join(f"{k}={env[k]}\n" for k in keys if k in env))
    return path


DEMO_ROOT = "demo-city"
DEMO_ADMIN = "demo-admin"
DEMO_MONITOR = "demo-monitor"  # monitoring staff: the console's everyday user


def demo_api_keys(stack: Stack) -> Path:
    """The demo's credentials: the stand-in task system's key (scope ``feedback``, handed
    to the receiver), a key for the person trying it (staff, silences, operator), a
    read-only ``export`` key (the demo prints new alerts with it), and two accounts at the
    root node of a one-node jurisdiction tree, with random passwords: an administrator and
    a monitoring staff member (the alert console's everyday user). With a broker that
    takes per-device accounts, also its administrator account, for ``ganzhi devices
    provision`` from a shell.
    Written to ``var/demo-keys.env`` (mode 600). The database is fresh each run, so are
    they."""
    passwords = {DEMO_ADMIN: secrets.token_urlsafe(12), DEMO_MONITOR: secrets.token_urlsafe(12)}
    people = ((DEMO_ADMIN, Role.ADMINISTRATOR, "Demo administrator"),
              (DEMO_MONITOR, Role.STAFF, "值班监控员"))

    async def make() -> tuple[str, str, str]:
        async with await psycopg.AsyncConnection.connect(stack.dsn, autocommit=True) as conn:
            _, feedback = await apikeys.create(conn, "demo-task-system", ["feedback"],
                                               actor="demo")
            _, staff = await apikeys.create(conn, "demo-staff",
                                            ["staff", "silences", "operator"], actor="demo")
            _, export = await apikeys.create(conn, "demo-export", ["export"], actor="demo")
            await accounts.ensure_root(conn, "demo", DEMO_ROOT, "Demo city")
            for username, role, display_name in people:
                try:
                    await accounts.create_user(
                        conn, "demo", username=username, password=passwords[username],
                        role=role, jurisdiction_id=DEMO_ROOT, display_name=display_name)
                except Conflict:  # --keep-data: the account of an earlier run; new password
                    user = await accounts.user_by_name(conn, username)
                    await accounts.update_user(conn, "demo", user.id,
                                               password=passwords[username])
        return feedback, staff, export

    feedback, staff, export = asyncio.run(make())
    stack.extra_env["GANZHI_DEMO__FEEDBACK_TOKEN"] = feedback
    path = stack.root / "demo-keys.env"
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(f"GANZHI_DEMO_STAFF_TOKEN={staff}\n"
                    f"GANZHI_DEMO_EXPORT_TOKEN={export}\n"
                    f"GANZHI_DEMO_ADMIN_USER={DEMO_ADMIN}\n"
                    f"GANZHI_DEMO_ADMIN_PASSWORD={passwords[DEMO_ADMIN]}\n"
                    f"GANZHI_DEMO_MONITOR_USER={DEMO_MONITOR}\n"
                    f"GANZHI_DEMO_MONITOR_PASSWORD={passwords[DEMO_MONITOR]}\n"
                    + (f"GANZHI_MQTT__ADMIN_USERNAME={broker.ADMIN_USER}\n"
                       f"GANZHI_MQTT__ADMIN_PASSWORD={broker.admin}\n"
                       if (broker := stack.broker_accounts) is not None else ""))
    return path


def register_demo_box(stack: Stack, box_file: Path) -> None:
    """The demo's site and devices in the registry, from its box file, with what their
    rules need (the cold rooms are chilled): what ``ganzhi registry import-box`` does."""
    from edge.config import load_config
    from ganzhi.access import EVERYTHING
    from ganzhi.registry.edge_box import register_box

    box = load_config(box_file)

    async def register() -> None:
        async with await psycopg.AsyncConnection.connect(stack.dsn, autocommit=True) as conn:
            await register_box(conn, EVERYTHING, "demo", box.site_id, box.registry_entries(),
                               jurisdiction_id=DEMO_ROOT, site_name="示范餐饮冷库")

    asyncio.run(register())


def provision_demo_box(stack: Stack, box_file: Path) -> None:
    """Every device and camera of the box gets its own broker account, as an installer
    does with ``ganzhi devices provision``: the password goes into a 0600 file beside the
    box file, named in the box file with the username. A new password each start."""
    import yaml

    from ganzhi import provisioning

    config = yaml.safe_load(box_file.read_text())
    secrets_dir = box_file.parent / "secrets"
    secrets_dir.mkdir(mode=0o700, exist_ok=True)

    async def issue() -> None:
        async with await psycopg.AsyncConnection.connect(stack.dsn, autocommit=True) as conn:
            for entry in [*config.get("devices", []), *config.get("cameras", [])]:
                issued = await provisioning.provision(
                    conn, stack.broker_admin(), "demo", config["site_id"],
                    entry["device_id"], rotate=True)
                path = secrets_dir / entry["device_id"]
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(issued.password + "\n")
                entry["username"], entry["password_file"] = issued.username, str(path)

    asyncio.run(issue())
    box_file.write_text(yaml.safe_dump(config, sort_keys=False))


def _demo_token(keys_file: Path, name: str) -> str:
    values = dict(line.split("=", 1) for line in keys_file.read_text().split() if "=" in line)
    return values[name]


def run_demo(
    settings: Settings,
    data_dir: str = "var",
    duration_s: float | None = None,
    keep_data: bool = False,
) -> int:
    configure_logging(settings.log_level, json_lines=False)
    root = Path(data_dir).resolve()
    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    ports = Ports.choose(wanted_ports(settings))
    stack = Stack(root, ports, Secrets.load_or_create(root / "secrets.env"),
                  extra_env=demo_env(root), mqtt_auth=True)
    try:
        stack.start_infrastructure(fresh_database=not keep_data)
        applied = migrate(stack.dsn)
        log.info("migrated", applied=applied)
        # What a deployment's daily timer does: the next days' partitions, retention.
        log.info("maintained", report=str(maintain(stack.dsn, settings.db.retention_days)))
        stack.use_api_roles()
        keys_file = demo_api_keys(stack)
        export_token = _demo_token(keys_file, "GANZHI_DEMO_EXPORT_TOKEN")
        asyncio.run(ensure_topics(settings.kafka.model_copy(update={"bootstrap": stack.bootstrap})))
        if not keep_data:
            for suffix in ("", "-wal", "-shm"):
                (root / "edge" / f"spool.db{suffix}").unlink(missing_ok=True)
        edge_config = demo_edge_config(ports, root)
        register_demo_box(stack, edge_config)
        provision_demo_box(stack, edge_config)
        for name in ("receiver", "api", "alerts", "stream", "ingest"):
            stack.start_service(name)
        stack.start_service("edge", "--config", str(edge_config))
        env_file = write_demo_env(stack)
        print(
            f"\nganzhi demo is running.\n"
            f"  console:     http://127.0.0.1:{ports.api}/console/  (sign in as"
            f" {DEMO_MONITOR} or {DEMO_ADMIN}; passwords in {keys_file})\n"
            f"  alerts API:  http://127.0.0.1:{ports.api}/api/v1/alerts\n"
            f"  API docs:    http://127.0.0.1:{ports.api}/docs\n"
            f"  metrics:     ingest :{ports.ops_ingest}  stream :{ports.ops_stream}"
            f"  alerts :{ports.ops_alerts}  edge :{ports.ops_edge}"
            f"  api :{ports.api}/metrics\n"
            f"  MQTT:        127.0.0.1:{ports.mqtt} (its own broker: an account per device"
            f" and service, no anonymous client)   Kafka: "
            f"{stack.bootstrap}   PostgreSQL: 127.0.0.1:{ports.postgres}\n"
            f"  logs:        {stack.logs}\n"
            f"  addresses:   {env_file} (for the ganzhi commands)\n"
            f"  API keys:    {keys_file} (staff: ack, assign, comment, resolve, silences;"
            f" export: read only; the stand-in task system reports back on each clue with"
            f" its own; the demo administrator's sign-in; the broker administrator, for"
            f" ganzhi devices provision)\n"
            f"One simulated cold room (cold-room-03) loses its compressor for a minute: its"
            f" temperature_high alert shows here within a minute, and resolves about a"
            f" minute after the repair (compressor_not_running itself needs 10 minutes"
            f" off)."
            f"\nCtrl-C stops everything.\n",
            flush=True,
        )
        started = time.monotonic()
        seen: set[tuple[int, str]] = set()
        last_poll = 0.0
        while not stop:
            if duration_s is not None and time.monotonic() - started > duration_s:
                break
            for svc in stack.services.values():
                if not svc.alive():
                    _restart(stack, svc)
            if time.monotonic() - last_poll > 2:
                _print_new_alerts(ports.api, seen, export_token)
                last_poll = time.monotonic()
            time.sleep(0.2)
        return 0
    except InfraError as exc:
        log.error("demo_failed", error=str(exc))
        return 1
    finally:
        log.info("stopping")
        stack.stop()


def _restart(stack: Stack, svc: Service) -> None:
    now = time.monotonic()
    if svc.next_start == 0.0:
        code = svc.proc.returncode if svc.proc else None
        if svc.restarts >= MAX_RESTARTS:
            raise InfraError(f"{svc.name} keeps dying (exit {code}); see {svc.log_path}")
        svc.next_start = now + min(2**svc.restarts, 30)
        log.warning("service_died", service=svc.name, exit=code, log=str(svc.log_path))
    elif now >= svc.next_start:
        svc.next_start = 0.0
        stack.restart(svc.name, wait=False)
        log.info("service_restarted", service=svc.name, restarts=svc.restarts)
