"""``ganzhi edge``: the agent of one edge box (sensors and cameras), wired from its YAML."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path
from typing import Any

from edge import metrics
from edge.camera.worker import CameraWorker, load_detector
from edge.config import AgentConfig, ConfigError, DeviceConfig, load_config
from edge.sampler import DeviceSampler
from edge.sources.base import DeviceSource
from edge.sources.modbus import ModbusSource, ModbusSourceConfig
from edge.sources.simulated import CounterSource, SimulatedSource
from edge.spool import Spool
from edge.uplink import BrokerEndpoint, DeviceUplink
from edge.watchdog import Notifier
from ganzhi.observability import OpsServer, configure_logging, get_logger, install_stop_signals

log = get_logger("edge.agent")


def build_source(dev: DeviceConfig) -> DeviceSource:
    if isinstance(dev.source, ModbusSourceConfig):
        return ModbusSource(dev.source)
    if dev.source.kind == "counter":
        return CounterSource(dev.source)
    return SimulatedSource(dev.source)


async def run_agent(cfg: AgentConfig, stop: asyncio.Event) -> None:
    spool = Spool(cfg.spool.path, cfg.spool.max_messages, cfg.spool.max_bytes,
                  cfg.spool.when_full)
    b = cfg.broker
    endpoint = BrokerEndpoint(b.host, b.port, b.keepalive_s, b.tls, b.ca_file,
                              b.client_cert, b.client_key)
    uplinks = [
        DeviceUplink(spool, endpoint, cfg.site_id, d.device_id,
                     d.username or f"{cfg.site_id}/{d.device_id}",
                     d.secret(), window=cfg.in_flight_window,
                     report_period_s=d.report.period_s).start()
        for d in cfg.devices
    ] + [
        DeviceUplink(spool, endpoint, cfg.site_id, c.device_id,
                     c.username or f"{cfg.site_id}/{c.device_id}",
                     c.secret(), window=cfg.in_flight_window,
                     report_period_s=c.report_period_s).start()
        for c in cfg.cameras
    ]
    samplers = [DeviceSampler(cfg.site_id, d, build_source(d), spool) for d in cfg.devices]
    cameras = [CameraWorker(cfg.site_id, c, spool, *load_detector(c)) for c in cfg.cameras]
    camera_stop = threading.Event()

    async def run_cameras() -> None:
        async def one(worker: CameraWorker) -> None:
            await asyncio.to_thread(worker.run, camera_stop)

        async def relay_stop() -> None:
            await stop.wait()
            camera_stop.set()

        relay = asyncio.create_task(relay_stop())
        try:
            await asyncio.gather(*(one(w) for w in cameras))
        finally:
            relay.cancel()

    def health() -> dict[str, Any]:
        connected = {u.device_id: u.connected.is_set() for u in uplinks}
        return {"ok": True, "spool_depth": spool.depth(), "connected": connected}

    ops = OpsServer(cfg.metrics_port, health).start() if cfg.metrics_port is not None else None
    last_dropped = 0

    async def watch_spool() -> None:
        nonlocal last_dropped
        while not stop.is_set():
            metrics.SPOOL_DEPTH.set(spool.depth())
            if spool.stats.dropped > last_dropped:
                metrics.SPOOL_DROPPED.labels(policy="drop_oldest").inc(
                    spool.stats.dropped - last_dropped)
                log.error("spool_full_dropped_oldest", total=spool.stats.dropped)
                last_dropped = spool.stats.dropped
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    notifier = Notifier.from_env()
    sampling = [asyncio.create_task(s.run(stop)) for s in samplers]

    async def watchdog() -> None:
        """``WATCHDOG=1`` while the loop turns and every sampler runs (systemd restarts
        the agent when the pings stop)."""
        if notifier.watchdog_s is None:
            return
        while not stop.is_set():
            if all(not t.done() for t in sampling):
                notifier.ping()
            else:
                log.error("sampler_stopped", detail="watchdog pings stop: systemd restarts")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), notifier.watchdog_s)

    log.info("edge_agent_started", site=cfg.site_id, devices=len(cfg.devices),
             cameras=len(cfg.cameras),
             pending=spool.depth())
    notifier.ready(f"{len(cfg.devices)} devices, {len(cfg.cameras)} cameras, "
                   f"{spool.depth()} messages pending")
    try:
        await asyncio.gather(watch_spool(), run_cameras(), watchdog(), *sampling)
    finally:
        notifier.stopping()
        camera_stop.set()
        # All at once: each drains for up to a few seconds, and a box has many devices.
        for u in uplinks:
            u.request_stop()
        for u in uplinks:
            await asyncio.to_thread(u.stop)
        spool.close()
        if ops is not None:
            ops.stop()
        log.info("edge_agent_stopped")


def run(config_path: Path, log_level: str = "INFO", log_json: bool = True) -> int:
    configure_logging(log_level, log_json)
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        log.error("bad_config", error=str(exc))
        print(exc)
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        await run_agent(cfg, stop)

    asyncio.run(main())
    return 0
