"""One camera: read, check health, gate on motion, detect, confirm, publish evidence.

Runs in its own thread (OpenCV and ONNX Runtime block). Everything it reports goes into
the box's spool like the sensors' messages: the annotated JPEG as an ``Evidence`` message
first, then the ``Detection`` that names its SHA-256, so the evidence always arrives
before the finding that refers to it, and nothing is lost while the broker is away.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from edge import metrics
from edge.camera.capture import Frame, VideoSource
from edge.camera.confirm import Change, ConfirmParams, Tracker
from edge.camera.evidence import annotate, encode_jpeg
from edge.camera.health import HealthMonitor, HealthParams, measure
from edge.camera.motion import MotionGate, MotionParams
from edge.camera.regions import RegionFilter
from edge.camera.review import ReviewParams, ReviewQueue
from edge.camera.schedule import (
    DetectionSchedule,
    Mode,
    ScheduleParams,
    crop_region,
    crop_scale,
    to_frame,
)
from edge.config import CameraConfig
from edge.spool import Spool
from ganzhi.contracts import (
    BoundingBox,
    Channel,
    Detection,
    DeviceClass,
    Envelope,
    Evidence,
    Reading,
    Telemetry,
    mqtt_topic,
    new_id,
)
from ganzhi.observability import get_logger

log = get_logger("edge.camera")


class Detector(Protocol):
    def detect(self, frames: Sequence[NDArray[np.uint8]], *, upscale: bool = True
               ) -> list[list[BoundingBox]]: ...


def load_detector(cfg: CameraConfig) -> tuple[Detector, dict[str, str]]:
    """The camera's model and its class -> violation map (config overrides the card)."""
    from vision.card import load_card
    from vision.runtime import YoloDetector, pick_precision

    card = load_card(cfg.model_dir)
    classes = cfg.violations if cfg.violations is not None else card.violations
    precision = pick_precision(card, cfg.detect.precision, classes)
    if precision == "int8" and card.int8 is None:
        log.warning("camera_model_no_int8", camera=cfg.device_id, model=str(cfg.model_dir),
                    hint="python -m vision.quantize; running fp32")
        precision = "fp32"
    log.info("camera_model", camera=cfg.device_id, model=str(cfg.model_dir),
             precision=precision)
    det = YoloDetector.from_dir(cfg.model_dir, threads=cfg.threads, precision=precision,
                                rect=cfg.detect.rect)
    if cfg.score_threshold is not None:  # the camera's own, for every class
        det.score_threshold = cfg.score_threshold
        det.class_thresholds = {}
    return det, dict(cfg.violations if cfg.violations is not None else det.card.violations)


@dataclass
class Counters:
    frames: int = 0
    inferences: int = 0
    skipped: int = 0
    crops: int = 0  # inferences on a motion region only
    pixels: int = 0  # detector input pixels (frame or crop), summed
    published: list[tuple[str, str]] = field(default_factory=list)  # (violation, state)


class CameraWorker:
    def __init__(self, site_id: str, cfg: CameraConfig, spool: Spool, detector: Detector,
                 violations: Mapping[str, str], source: VideoSource | None = None) -> None:
        self.site_id, self.cfg, self.spool = site_id, cfg, spool
        self.detector = detector
        card = getattr(detector, "card", None)
        self.model = f"{card.name}@{card.version}" if card is not None else None
        self.by_violation: dict[str, set[str]] = {}
        for label, violation in violations.items():
            self.by_violation.setdefault(violation, set()).add(label)
        c = cfg.confirm
        params = ConfirmParams(c.window_s, c.raise_ratio, c.confirm_s, c.clear_ratio,
                               c.clear_s, c.cooldown_s)
        self.trackers = {v: Tracker(params) for v in self.by_violation}
        h = cfg.health
        self.health = HealthMonitor(HealthParams(h.dark_mean, h.flat_std, h.blur_var,
                                                 h.frozen_diff, h.offline_after_s))
        m = cfg.motion
        self.motion = MotionGate(MotionParams(pixel_threshold=m.pixel_threshold,
                                              min_changed=m.min_changed,
                                              max_interval_s=m.max_interval_s))
        d = cfg.detect
        self.schedule = DetectionSchedule(ScheduleParams(
            idle_fps=min(d.idle_fps, cfg.fps), pending_fps=min(d.pending_fps, cfg.fps),
            max_interval_s=m.max_interval_s, crops=d.crops))
        self.regions = RegionFilter(cfg.rois, cfg.min_height)
        r = cfg.review
        self.review = None if r.dir is None else ReviewQueue(
            ReviewParams(r.dir, r.uncertain[0], r.uncertain[1], r.min_interval_s, r.max_items),
            cfg.device_id, {label for labels in self.by_violation.values() for label in labels})
        self.source = source or VideoSource(cfg.device_id, cfg.source, cfg.fps, loop=cfg.loop,
                                            realtime=cfg.realtime)
        self.counters = Counters()
        self._last_boxes: list[BoundingBox] = []
        self._last_report = 0.0

    # ------------------------------------------------------------------ publishing

    def _spool(self, channel: Channel, msg: Envelope) -> None:
        topic = mqtt_topic(self.site_id, self.cfg.device_id, channel)
        if self.spool.append(self.cfg.device_id, topic, msg.model_dump_json().encode()) is None:
            metrics.SPOOL_DROPPED.labels(policy="refuse_new").inc()
            log.error("spool_refused", device=self.cfg.device_id, channel=channel.value)
        else:
            metrics.SPOOLED.labels(device=self.cfg.device_id).inc()

    def publish(self, violation: str, change: Change, frame: Frame,
                boxes: Sequence[BoundingBox]) -> str:
        """Evidence, then the finding; returns the snapshot's SHA-256."""
        labels = self.by_violation.get(violation, set())
        shown = [b for b in boxes if b.label in labels] if change is Change.RAISED else list(boxes)
        title = f"{violation} {change.value}"
        jpeg, sha = encode_jpeg(annotate(frame.image, shown, labels, self.cfg.device_id,
                                         frame.ts, title), self.cfg.snapshot_quality)
        common = {"site_id": self.site_id, "device_id": self.cfg.device_id, "ts": frame.ts}
        self._spool(Channel.EVIDENCE, Evidence(
            msg_id=new_id(), sha256=sha, data_b64=base64.b64encode(jpeg).decode(), **common))
        score = max((b.score for b in boxes if b.label in labels), default=0.0)
        self._spool(Channel.DETECTION, Detection(
            msg_id=new_id(), violation=violation, state=change.value, score=score,
            boxes=shown[:100], snapshot_sha256=sha, model=self.model, **common))
        metrics.CAMERA_CHANGES.labels(camera=self.cfg.device_id, violation=violation,
                                      state=change.value).inc()
        self.counters.published.append((violation, change.value))
        if (self.review is not None and change is Change.RAISED
                and violation in self.by_violation):
            self.review.finding(frame.image, frame.ts, boxes, self.model, sha)
        log.info("camera_finding", camera=self.cfg.device_id, violation=violation,
                 state=change.value, sha256=sha, ts=frame.ts.isoformat())
        return sha

    def _heartbeat(self, frame: Frame) -> None:
        if frame.t - self._last_report < self.cfg.report_period_s and self._last_report:
            return
        self._last_report = frame.t or 1e-9
        c = self.counters
        readings = [Reading(metric=m, value=float(v), unit="1") for m, v in (
            ("frames_total", c.frames), ("inferences_total", c.inferences),
            ("motion_skipped_total", c.skipped), ("motion_changed", self.motion.changed))]
        self._spool(Channel.TELEMETRY, Telemetry(
            msg_id=new_id(), site_id=self.site_id, device_id=self.cfg.device_id, ts=frame.ts,
            device_class=DeviceClass.KITCHEN_CAMERA, readings=readings))

    # ------------------------------------------------------------------ one frame

    def process(self, frame: Frame) -> None:
        cam = self.cfg.device_id
        self.counters.frames += 1
        metrics.CAMERA_FRAMES.labels(camera=cam).inc()
        for name, health_change in self.health.frame(frame.t, measure(frame.image)).items():
            self.publish(name, health_change, frame, [])
        moved = self.motion.observe(frame.image)
        h, w = frame.image.shape[:2]
        d = self.cfg.detect
        region = None
        if moved and self.motion.region is not None and d.crops:
            region = crop_region(self.motion.region, w, h, min_side=d.crop_min_px,
                                 max_share=d.crop_max_share)
        pending = any(tr.pending for tr in self.trackers.values())
        mode = self.schedule.decide(frame.t, moved, pending, region is not None)
        if mode is not Mode.SKIP:
            started = time.perf_counter()
            if mode is Mode.CROP and region is not None:
                x1, y1, x2, y2 = region
                crop = frame.image[y1:y2, x1:x2]
                card = getattr(self.detector, "card", None)
                scale = crop_scale(w, h, card.input_size, d.crop_native) if card else 1.0
                if scale < 1.0:
                    crop = np.asarray(cv2.resize(crop, (max(1, round((x2 - x1) * scale)),
                                                        max(1, round((y2 - y1) * scale))),
                                                 interpolation=cv2.INTER_LINEAR), np.uint8)
                found = self.detector.detect([crop], upscale=False)[0]
                boxes = [b.model_copy(update=dict(zip(
                    ("x1", "y1", "x2", "y2"),
                    to_frame((b.x1, b.y1, b.x2, b.y2), region, scale), strict=True)))
                    for b in found]
                self.counters.crops += 1
                self.counters.pixels += (x2 - x1) * (y2 - y1)
            else:
                boxes = self.detector.detect([frame.image])[0]
                self.counters.pixels += w * h
            metrics.CAMERA_INFER_SECONDS.labels(camera=cam).observe(
                time.perf_counter() - started)
            boxes = self.regions.apply(boxes, w, h)
            self._last_boxes = boxes
            self.counters.inferences += 1
            metrics.CAMERA_INFERENCES.labels(camera=cam).inc()
            if self.review is not None:
                self.review.offer(frame.t, frame.image, frame.ts, boxes, self.model)
            for violation, labels in self.by_violation.items():
                hit = any(b.label in labels for b in boxes)
                change = self.trackers[violation].update(frame.t, hit)
                if change is not None:
                    self.publish(violation, change, frame, boxes)
        else:
            self.counters.skipped += 1
            metrics.CAMERA_MOTION_SKIPPED.labels(camera=cam).inc()
        self._heartbeat(frame)

    def run(self, stop: threading.Event) -> None:
        log.info("camera_started", camera=self.cfg.device_id, source=_safe(self.cfg.source))
        self.health.started(time.monotonic())
        last: Frame | None = None
        try:
            while not stop.is_set():
                frame = self.source.read(stop)
                if frame is None:
                    if self.source.ended:
                        break
                    for name, change in self.health.tick(time.monotonic()).items():
                        # The last picture seen, stamped now: evidence of what stopped.
                        image = last.image if last is not None else _BLANK
                        self.publish(name, change, Frame(0.0, datetime.now(UTC), image), [])
                    continue
                self.health.seen(time.monotonic())
                self.process(frame)
                last = frame
        finally:
            self.source.close()
            log.info("camera_stopped", camera=self.cfg.device_id,
                     frames=self.counters.frames, inferences=self.counters.inferences)


_BLANK = np.zeros((240, 320, 3), np.uint8)


def _safe(source: str) -> str:
    """The source without credentials (rtsp://user:pass@host -> rtsp://***@host)."""
    if "://" in source and "@" in source:
        scheme, rest = source.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return source
