"""The console's browser tests: one running stack per module (Mosquitto, Tansu,
PostgreSQL; ``ganzhi ingest|stream|alerts|api`` as subprocesses, the API serving the built
console), a jurisdiction tree with two sibling districts and their staff, and headless
Chromium driven by Playwright.

The console must be built (``npm ci && npm run build`` in ``api/console``, which ``./dev``
does): without ``api/console/dist`` the tests skip, unless ``GANZHI_REQUIRE_CONSOLE=1``
(CI), where they fail.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import AsyncConnection

from alerts.feedback_reporter import FeedbackReporter
from alerts.receiver import ClueReceiver
from ganzhi import apikeys
from ganzhi.access import Role
from ganzhi.db.migrate import migrate
from ganzhi.settings import MqttSettings
from ganzhi.stack.infra import (
    Managed,
    create_database,
    free_port,
    port_open,
    start_mosquitto,
    start_tansu,
)

from access_fixtures import seed_tree, seed_users
from console_stack import (
    ACCESS_TTL_S,
    ARTIFACTS,
    CAMERA,
    CHROMIUM,
    DIST,
    DURATION_S,
    FRIDGE,
    LIMIT_C,
    SITE,
    ConsoleStack,
)
from mqtt_device import SHARE_GROUP
from waiting import wait_for

SECRET = "browser-webhook-secret-0123456789abcdef"
JWT_SECRET = "browser-jwt-signing-key-0123456789abcdefgh"

# Staff of district A (who sees site-a1), of its sibling district B, and an administrator.
USERS: dict[str, tuple[Role, str]] = {
    "a-staff": (Role.STAFF, "district-a"),
    "b-staff": (Role.STAFF, "district-b"),
    "city-admin": (Role.ADMINISTRATOR, "city"),
}


def _require_console() -> None:
    if (DIST / "index.html").is_file():
        return
    reason = f"the console is not built ({DIST} missing): run ./dev setup"
    if os.environ.get("GANZHI_REQUIRE_CONSOLE") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


async def _seed(dsn: str) -> str:
    """The tree (district-a ⊃ station-a ⊃ site-a1; district-b ⊃ station-b ⊃ site-b1), the
    users, the fridge and the camera of site-a1; the task system's feedback key."""
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        await seed_tree(conn)
        await conn.execute("UPDATE sites SET name = %s, category = 'restaurant', address = %s"
                           " WHERE id = %s", ("幸福里餐厅（示例）", "示例路 1 号", SITE))
        await seed_users(conn, USERS)
        for device, cls, params, location in (
                (FRIDGE, "cold_store", '{"variant": "chilled"}', "冷藏库 1"),
                (CAMERA, "kitchen_camera", "{}", "后厨操作间")):
            await conn.execute(
                "INSERT INTO devices (site_id, device_id, device_class, params, location)"
                " VALUES (%s, %s, %s, %s::jsonb, %s)", (SITE, device, cls, params, location))
        _, feedback = await apikeys.create(conn, "browser-task-system", ["feedback"])
    return feedback


@pytest.fixture(scope="module")
def console_stack(pg_server: Managed, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[ConsoleStack]:
    _require_console()
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM} (set GANZHI_CHROMIUM)")
    tmp = tmp_path_factory.mktemp("console")
    name = f"t_{uuid.uuid4().hex[:12]}"
    create_database(pg_server.extra["admin_dsn"], name)
    dsn = pg_server.extra["admin_dsn"].rsplit("/", 1)[0] + f"/{name}"
    migrate(dsn)
    feedback_key = asyncio.run(_seed(dsn))
    broker = start_mosquitto(tmp / "mosquitto")
    tansu = start_tansu(tmp)
    ports = {n: free_port() for n in ("ingest", "stream", "alerts", "api", "web")}
    rules = tmp / "rules.yaml"
    rules.write_text("cold_store: {defaults: {variant: chilled}}\n")
    feedback = FeedbackReporter(f"http://127.0.0.1:{ports['api']}", feedback_key).start()
    receiver = ClueReceiver(SECRET.encode(), feedback=feedback).start()
    env = {
        **os.environ,
        "GANZHI_LOG_JSON": "true",
        "GANZHI_MQTT__HOST": broker.host,
        "GANZHI_MQTT__PORT": str(broker.port),
        "GANZHI_MQTT__SHARE_GROUP": SHARE_GROUP,
        "GANZHI_KAFKA__BOOTSTRAP": f"{tansu.host}:{tansu.port}",
        "GANZHI_KAFKA__PARTITIONS": "2",
        "GANZHI_DB__DSN": dsn,
        "GANZHI_EVIDENCE__DIR": str(tmp / "evidence"),
        "GANZHI_WEBHOOK__URL": receiver.url,
        "GANZHI_WEBHOOK__SECRET": SECRET,
        "GANZHI_WEBHOOK__BACKOFF_BASE_S": "0.2",
        "GANZHI_AUTH__JWT_SECRET": JWT_SECRET,
        # The shortest lifetime allowed: the live stream ends within a minute after it
        # and the console must refresh before it reconnects (test_live_after_token_expiry).
        "GANZHI_AUTH__ACCESS_TTL_S": str(ACCESS_TTL_S),
        "GANZHI_OPS__INGEST": str(ports["ingest"]),
        "GANZHI_OPS__STREAM": str(ports["stream"]),
        "GANZHI_OPS__ALERTS": str(ports["alerts"]),
        "GANZHI_API__PORT": str(ports["api"]),
        "GANZHI_API__CONSOLE_DIR": str(DIST),
        "GANZHI_STREAM__WEB_PORT": str(ports["web"]),
        "GANZHI_STREAM__DATA_DIR": str(tmp / "stream"),
        "GANZHI_STREAM__RULES_FILE": str(rules),
        "GANZHI_STREAM__COLD_CHAIN__LIMIT_C": str(LIMIT_C),
        "GANZHI_STREAM__COLD_CHAIN__DURATION_S": str(DURATION_S),
        "GANZHI_STREAM__COLD_CHAIN__CLEAR_DURATION_S": "60",
        "GANZHI_STREAM__COLD_CHAIN__ALLOWED_LATENESS_S": "10",
        "GANZHI_STREAM__BATCH_WITHIN_S": "0.2",
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = tmp / "logs"
    logs.mkdir()
    try:
        for svc in ("alerts", "stream", "ingest", "api"):
            with (logs / f"{svc}.log").open("wb") as out:
                procs[svc] = subprocess.Popen(
                    [sys.executable, "-m", "ganzhi.cli", svc], env=env,
                    stdout=out, stderr=subprocess.STDOUT)
        def up(svc: str) -> bool:
            return port_open("127.0.0.1", ports[svc]) or procs[svc].poll() is not None

        for svc in ("alerts", "stream", "ingest", "api"):
            wait_for(functools.partial(up, svc), 60, f"{svc} to listen", interval=0.25)
            assert procs[svc].poll() is None, (logs / f"{svc}.log").read_text()[-3000:]
        yield ConsoleStack(f"http://127.0.0.1:{ports['api']}", dsn,
                           MqttSettings(host=broker.host, port=broker.port), receiver, procs)
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for svc, proc in procs.items():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            print(f"--- {svc} (exit {proc.returncode}) ---")
            print((logs / f"{svc}.log").read_text()[-1500:])
        receiver.stop()
        feedback.stop()
        tansu.stop()
        broker.stop()
        shutil.rmtree(tmp / "stream", ignore_errors=True)


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
