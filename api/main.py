"""The HTTP API: ``create_app(settings)`` for ASGI servers and tests, ``run`` for the CLI."""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from prometheus_client import Counter, Histogram
from psycopg_pool import AsyncConnectionPool

from alerts.repository import Policy
from api.errors import AUTH_RESPONSES
from api.routes import (
    accounts,
    alerts,
    audit,
    auth,
    devices,
    evidence,
    health,
    incidents,
    keys,
    live,
    provisioning,
    receivers,
    registry,
    silences,
    stats,
)
from api.routes.live import LiveHub
from api.static import mount_console
from ganzhi.observability import configure_logging, get_logger
from ganzhi.settings import InsecureSettingError, Settings, jwt_secret

log = get_logger("api")

REQUESTS = Counter(
    "ganzhi_api_requests_total",
    "HTTP requests, by method, route and status.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "ganzhi_api_request_seconds",
    "HTTP request duration, by method and route.",
    ["method", "route"],
)


def _route_label(request: Request) -> str:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"  # templates only: bounded label values


async def _observe(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started = time.perf_counter()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:
        route = _route_label(request)
        REQUESTS.labels(request.method, route, str(status)).inc()
        LATENCY.labels(request.method, route).observe(time.perf_counter() - started)


def _policy(settings: Settings) -> tuple[Policy | None, str | None]:
    """The alerts policy (receivers, escalation) that resolving an incident needs, or
    why there is none. The API still starts without it: reads and other actions work,
    and the routes that need it answer 503 with the reason."""
    if settings.webhook.secret is None:
        return None, "GANZHI_WEBHOOK__SECRET is not set, so incidents cannot be resolved here"
    try:
        return Policy.from_settings(settings), None
    except InsecureSettingError as exc:
        return None, str(exc)


def create_app(settings: Settings) -> FastAPI:
    """The API; InsecureSettingError without a usable GANZHI_AUTH__JWT_SECRET (a weak key
    would let anyone mint tokens, and without one nobody could sign in)."""
    secret = jwt_secret(settings.auth)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            settings.db.dsn.get_secret_value(),
            min_size=settings.db.pool_min,
            max_size=settings.db.pool_max,
            kwargs={"autocommit": True},
            open=False,
        )
        # Start even when the database is down: /healthz then answers 503 until it is back.
        await pool.open(wait=False)
        read_pool = pool
        if settings.db.read_dsn is not None:
            # The replica (or any read-only role): every session read-only, so a query
            # that would write fails here as it would on a standby.
            read_pool = AsyncConnectionPool(
                settings.db.read_dsn.get_secret_value(),
                min_size=settings.db.pool_min, max_size=settings.db.pool_max,
                kwargs={"autocommit": True,
                        "options": "-c default_transaction_read_only=on"},
                open=False)
            await read_pool.open(wait=False)
        app.state.settings = settings
        app.state.jwt_secret = secret
        app.state.pool = pool
        app.state.read_pool = read_pool
        # The live stream's LISTEN connection: opened with the first stream.
        app.state.live = LiveHub(settings.db.dsn.get_secret_value(), pool)
        app.state.policy, app.state.policy_error = _policy(settings)
        if app.state.policy_error:
            log.warning("api_no_alerts_policy", reason=app.state.policy_error)
        try:
            yield
        finally:
            await app.state.live.close()
            if read_pool is not pool:
                await read_pool.close()
            await pool.close()

    app = FastAPI(
        title="ganzhi API",
        version="1",
        summary="Alerts and incidents, their clues, silences and device readings; the"
        " console's figures and live stream; the console itself at /console/."
        " Authenticate with Authorization: Bearer <access token or API key>; see"
        " docs/access.md.",
        lifespan=lifespan,
    )
    app.middleware("http")(_observe)
    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(accounts.router, responses=AUTH_RESPONSES)
    app.include_router(keys.router, responses=AUTH_RESPONSES)
    app.include_router(audit.router, responses=AUTH_RESPONSES)
    app.include_router(alerts.router, responses=AUTH_RESPONSES)
    app.include_router(devices.router, responses=AUTH_RESPONSES)
    app.include_router(evidence.router, responses=AUTH_RESPONSES)
    app.include_router(incidents.router, responses=AUTH_RESPONSES)
    app.include_router(incidents.clues, responses=AUTH_RESPONSES)
    app.include_router(silences.router, responses=AUTH_RESPONSES)
    app.include_router(receivers.router, responses=AUTH_RESPONSES)
    app.include_router(stats.router, responses=AUTH_RESPONSES)
    app.include_router(live.router)  # declares its own 401/403
    app.include_router(provisioning.router, responses=AUTH_RESPONSES)
    app.include_router(registry.router, responses=AUTH_RESPONSES)
    mount_console(app, settings.api.console_dir)
    return app


def run(settings: Settings) -> int:
    """Entry point of ``ganzhi api``: uvicorn until SIGTERM/SIGINT (uvicorn drains)."""
    configure_logging(settings.log_level, settings.log_json)
    log.info("api_starting", host=settings.api.host, port=settings.api.port)
    app = create_app(settings)  # InsecureSettingError: the CLI says what to set
    config = uvicorn.Config(
        app,
        host=settings.api.host,
        port=settings.api.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    # uvicorn drains on SIGTERM/SIGINT, then re-raises the signal to the handler that was
    # installed before it; a no-op one there lets run() return its exit code instead.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
    log.info("api_stopped")
    return 0 if server.started else 1
