"""Per device: read the source, decide what to report, put it in the spool.

Readings go out when they moved beyond their deadband since last sent (on change) and,
changed or not, every ``period_s`` (a heartbeat and a full record). A read that fails is
counted and becomes one ``source_error`` device event when the device starts failing and
one ``source_recovered`` when it reads again, not an event per failed read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from edge import metrics
from edge.config import DeviceConfig
from edge.sources.base import DeviceSource, SourceError, SourceEvent, SourceSample
from edge.spool import Spool
from ganzhi.contracts import (
    Channel,
    DeviceEvent,
    Reading,
    Severity,
    Telemetry,
    mqtt_topic,
    new_id,
    utcnow,
)
from ganzhi.observability import get_logger

log = get_logger("edge.sampler")


@dataclass
class ReportState:
    last_sent: dict[str, float] = field(default_factory=dict)
    last_full: float | None = None  # monotonic time of the last full report


def choose_readings(
    sample: SourceSample, state: ReportState, cfg: DeviceConfig, now: float
) -> list[Reading]:
    """Which of the sample's values to send now. Pure (updates ``state``)."""
    full = state.last_full is None or now - state.last_full >= cfg.report.period_s
    chosen = []
    for v in sample.values:
        prev = state.last_sent.get(v.metric)
        band = cfg.report.deadbands.get(v.metric, 0.0)
        changed = prev is None or abs(v.value - prev) > band
        if full or (cfg.report.on_change and changed):
            chosen.append(Reading(metric=v.metric, value=v.value, unit=v.unit))
            state.last_sent[v.metric] = v.value
    if full:
        state.last_full = now
    return chosen


class DeviceSampler:
    def __init__(self, site_id: str, cfg: DeviceConfig, source: DeviceSource, spool: Spool):
        self.site_id, self.cfg, self.source, self.spool = site_id, cfg, source, spool
        self.report = ReportState()
        self.failing: str | None = None
        self.opened = False

    async def _spool(self, channel: Channel, payload: bytes) -> None:
        topic = mqtt_topic(self.site_id, self.cfg.device_id, channel)
        seq = await asyncio.to_thread(self.spool.append, self.cfg.device_id, topic, payload)
        if seq is None:
            metrics.SPOOL_DROPPED.labels(policy="refuse_new").inc()
            log.error("spool_refused", device=self.cfg.device_id)
        else:
            metrics.SPOOLED.labels(device=self.cfg.device_id).inc()

    async def _event(self, ev: SourceEvent) -> None:
        msg = DeviceEvent(
            msg_id=new_id(), site_id=self.site_id, device_id=self.cfg.device_id, ts=utcnow(),
            event=ev.event, severity=ev.severity, detail=ev.detail,
        )
        await self._spool(Channel.EVENT, msg.model_dump_json().encode())

    async def _failed(self, exc: SourceError) -> None:
        dev = self.cfg.device_id
        metrics.SOURCE_ERRORS.labels(device=dev, reason=exc.reason).inc()
        if self.failing is None:
            log.warning("source_failing", device=dev, reason=exc.reason, detail=exc.detail)
            await self._event(SourceEvent("source_error", Severity.MINOR,
                                          {"reason": exc.reason, "detail": exc.detail}))
        self.failing = exc.reason

    async def _read(self) -> SourceSample | None:
        """One read, opening the source first if that has not worked yet; None on failure.

        Anything a source raises is a failed read, never the end of the agent: a bug in
        one source (or a serial port missing at boot) must not stop the other devices.
        """
        try:
            if not self.opened:
                await self.source.open()
                self.opened = True
            return await self.source.read()
        except SourceError as exc:
            await self._failed(exc)
        except Exception as exc:
            log.exception("source_crashed", device=self.cfg.device_id)
            await self._failed(SourceError("source_crashed", f"{type(exc).__name__}: {exc}"))
        return None

    async def sample_once(self) -> None:
        dev = self.cfg.device_id
        sample = await self._read()
        if sample is None:
            return
        if self.failing is not None:
            log.info("source_recovered", device=dev)
            await self._event(SourceEvent("source_recovered", Severity.INFO,
                                          {"after": self.failing}))
            self.failing = None
        metrics.SAMPLED.labels(device=dev).inc(len(sample.values))
        readings = choose_readings(sample, self.report, self.cfg, time.monotonic())
        if readings:
            msg = Telemetry(
                msg_id=new_id(), site_id=self.site_id, device_id=dev, ts=sample.ts,
                device_class=self.cfg.device_class, readings=readings,
            )
            await self._spool(Channel.TELEMETRY, msg.model_dump_json().encode())
        for ev in sample.events:
            await self._event(ev)

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.cfg.sample_interval_s
        next_at = time.monotonic()
        try:
            while not stop.is_set():
                await self.sample_once()
                next_at += interval
                delay = next_at - time.monotonic()
                if delay < 0:  # fell behind (slow device): skip, don't burst
                    next_at = time.monotonic()
                    delay = 0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            if self.opened:
                with contextlib.suppress(Exception):
                    await self.source.close()
