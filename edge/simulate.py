"""``ganzhi simulate``: simulated cold rooms publishing real-time readings over MQTT."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from edge.publisher import DevicePublisher
from edge.simulators.cold_room import ColdRoomSpec, simulate
from ganzhi.contracts import Channel, DeviceClass, Reading, Telemetry, new_id
from ganzhi.observability import OpsServer, configure_logging, get_logger
from ganzhi.settings import Settings

log = get_logger("edge.simulate")
PUBLISHED = Counter(
    "ganzhi_edge_sim_published_total", "Simulated messages acknowledged", ["device"]
)


@dataclass(frozen=True)
class SimulatedRoom:
    site_id: str
    device_id: str
    spec: ColdRoomSpec


def demo_rooms(site_id: str = "demo-site", count: int = 3, fail_after_s: float = 0.0) -> list[
    SimulatedRoom
]:
    """A few healthy rooms and one whose compressor fails shortly after the start."""
    rooms = [SimulatedRoom(site_id, f"cold-room-{i:02d}", ColdRoomSpec()) for i in range(1, count)]
    failing = ColdRoomSpec(
        start_c=6.5, warming_per_s=0.005, cooling_c_per_s=0.3,
        failure_at_s=fail_after_s, failure_for_s=60.0,
    )
    rooms.append(SimulatedRoom(site_id, f"cold-room-{count:02d}", failing))
    return rooms


def telemetry_for(room: SimulatedRoom, ts: datetime, temp: float, compressor: bool) -> Telemetry:
    return Telemetry(
        msg_id=new_id(), site_id=room.site_id, device_id=room.device_id, ts=ts,
        device_class=DeviceClass.COLD_STORE,
        readings=[
            Reading(metric="temperature", value=temp, unit="celsius"),
            Reading(metric="compressor_on", value=1.0 if compressor else 0.0, unit="bool"),
        ],
    )


def run_room(
    settings: Settings, room: SimulatedRoom, interval_s: float, seed: int, stop: threading.Event
) -> None:
    pub = DevicePublisher(settings.mqtt, room.site_id, room.device_id)
    try:
        pub.wait_connected()
        start = datetime.now(UTC)
        for sample in simulate(room.spec, start, interval_s, seed):
            if stop.is_set():
                return
            delay = (sample.ts - datetime.now(UTC)).total_seconds()
            if delay > 0 and stop.wait(delay):
                return
            msg = telemetry_for(room, sample.ts, sample.temperature_c, sample.compressor_on)
            if pub.publish(Channel.TELEMETRY, msg):
                PUBLISHED.labels(device=room.device_id).inc()
            else:
                log.warning("publish_not_acknowledged", device=room.device_id)
    finally:
        pub.close()


def run(settings: Settings, rooms: int = 3, interval_s: float = 2.0, seed: int = 1) -> int:
    configure_logging(settings.log_level, settings.log_json)
    stop = threading.Event()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def health() -> dict[str, Any]:
        return {"ok": not stop.is_set()}

    ops = OpsServer(settings.ops.edge, health).start()
    threads = [
        threading.Thread(target=run_room, args=(settings, r, interval_s, seed + i, stop))
        for i, r in enumerate(demo_rooms(count=rooms))
    ]
    for t in threads:
        t.start()
    log.info("simulation_started", rooms=rooms, interval_s=interval_s)
    while not stop.wait(0.5):
        pass
    for t in threads:
        t.join(10)
    ops.stop()
    log.info("simulation_stopped")
    return 0
