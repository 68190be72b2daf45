"""``ganzhi ingest``: run one ingest worker until SIGTERM."""

from __future__ import annotations

import asyncio
from typing import Any

from ganzhi.kafka import ensure_topics
from ganzhi.observability import OpsServer, configure_logging, get_logger, install_stop_signals
from ganzhi.settings import Settings, share_group
from ingest.bridge import Bridge

log = get_logger("ingest")


async def serve(settings: Settings, stop: asyncio.Event, *, leave: bool = False) -> None:
    await ensure_topics(settings.kafka)
    bridge = Bridge(settings, leave=leave)

    def health() -> dict[str, Any]:
        return {"ok": bridge.subscribed, "mqtt_connected": bridge.connected,
                "subscribed": bridge.subscribed}

    ops = OpsServer(settings.ops.ingest, health, settings.ops.host).start()
    log.info("ingest_started", worker=settings.ingest.worker_id, ops_port=ops.port)
    try:
        await bridge.run(stop)
    finally:
        ops.stop()
        log.info("ingest_stopped")


def run(settings: Settings, *, leave: bool = False) -> int:
    """One ingest worker until SIGTERM; with ``leave``, until the messages the broker
    queued for this worker id are forwarded and its session is ended (scaling down)."""
    share_group(settings.mqtt)  # refuse to start without a secret one
    configure_logging(settings.log_level, settings.log_json)

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        await serve(settings, stop, leave=leave)

    asyncio.run(main())
    return 0
