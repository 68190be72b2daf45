"""Camera agent logic without I/O: confirmation, health, motion gating, regions, evidence."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest

from edge.camera.confirm import Change, ConfirmParams, Tracker
from edge.camera.evidence import annotate, encode_jpeg
from edge.camera.health import BLURRED, COVERED, FROZEN, OFFLINE, HealthMonitor, measure
from edge.camera.motion import MotionGate, MotionParams
from edge.camera.regions import RegionFilter
from ganzhi.contracts import BoundingBox
from ganzhi.contracts.payloads import utcnow

P = ConfirmParams(window_s=10, raise_ratio=0.6, confirm_s=5, clear_ratio=0.1, clear_s=10,
                  cooldown_s=60, min_samples=3)


def feed(tr: Tracker, hits: list[bool], start: float = 0.0, dt: float = 1.0
         ) -> list[tuple[float, Change]]:
    out = []
    for i, h in enumerate(hits):
        t = start + i * dt
        c = tr.update(t, h)
        if c is not None:
            out.append((t, c))
    return out


def test_flicker_does_not_raise() -> None:
    tr = Tracker(P)
    # one hit in three, for a minute: ratio ~0.33 < 0.6
    assert feed(tr, [i % 3 == 0 for i in range(60)]) == []


def test_persistence_raises_once_after_confirm_then_clears_after_hold() -> None:
    tr = Tracker(P)
    changes = feed(tr, [True] * 30 + [False] * 30)
    assert [c for _, c in changes] == [Change.RAISED, Change.CLEARED]
    raised_at, cleared_at = changes[0][0], changes[1][0]
    assert 5 <= raised_at <= 8  # ratio >= 0.6 from the 3rd sample, then 5 s of it
    assert cleared_at >= 30 + 10  # ratio <= 0.1 needs the window to empty, then 10 s


def test_cooldown_holds_a_second_raise_then_lets_it_through() -> None:
    tr = Tracker(P)
    first = feed(tr, [True] * 15 + [False] * 25)
    assert [c for _, c in first] == [Change.RAISED, Change.CLEARED]
    # Violation again right away: within 60 s of the first raise, held.
    again = feed(tr, [True] * 40, start=40)
    assert [c for _, c in again] == [Change.RAISED]
    assert again[0][0] - first[0][0] >= 60


def test_short_gap_does_not_clear() -> None:
    tr = Tracker(P)
    changes = feed(tr, [True] * 20 + [False] * 3 + [True] * 20)
    assert [c for _, c in changes] == [Change.RAISED]


def noise_frame(seed: int, shape: tuple[int, int] = (240, 320)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(60, 200, (*shape, 3), dtype=np.uint8)
    return cv2.GaussianBlur(img, (3, 3), 0)


def run_health(frames: list[np.ndarray], dt: float = 1.0) -> dict[str, Change]:
    hm = HealthMonitor()
    seen: dict[str, Change] = {}
    for i, f in enumerate(frames):
        seen.update(hm.frame(i * dt, measure(f)))
    return seen


def test_healthy_moving_picture_raises_nothing() -> None:
    assert run_health([noise_frame(i) for i in range(40)]) == {}


def test_frozen_picture() -> None:
    f = noise_frame(1)
    assert run_health([f] * 40) == {FROZEN: Change.RAISED}


def test_dark_or_covered_lens() -> None:
    dark = [np.full((240, 320, 3), 8 + (i % 2), np.uint8) for i in range(40)]
    assert run_health(dark) == {COVERED: Change.RAISED}


def scene(seed: int) -> np.ndarray:
    """A kitchen-like picture: a lit gradient, counters and shelves, sensor noise."""
    img = np.tile(np.linspace(60, 200, 320, dtype=np.uint8), (240, 1))
    img = cv2.merge([img, img, img])
    cv2.rectangle(img, (20, 150), (300, 200), (40, 40, 40), -1)
    cv2.rectangle(img, (40, 30), (120, 120), (220, 220, 220), -1)
    cv2.rectangle(img, (180, 40), (280, 110), (90, 120, 160), -1)
    x = 20 + (seed * 7) % 260  # someone walking past
    cv2.rectangle(img, (x, 60), (x + 30, 190), (30, 60, 200), -1)
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def test_blurred_picture() -> None:
    blurred = [cv2.GaussianBlur(scene(i), (31, 31), 12) for i in range(40)]
    stats = measure(blurred[0])
    assert stats.sharpness < 40 < measure(scene(0)).sharpness
    assert stats.std > 20 and stats.mean > 25  # not a covered lens
    assert run_health(blurred) == {BLURRED: Change.RAISED}


def test_offline_after_silence_and_back() -> None:
    hm = HealthMonitor()
    hm.started(0.0)
    assert hm.tick(10.0) == {}
    assert hm.tick(31.0) == {OFFLINE: Change.RAISED}
    assert hm.tick(40.0) == {}
    hm.seen(41.0)
    assert hm.frame(41.0, measure(noise_frame(2)))[OFFLINE] is Change.CLEARED


def test_motion_gate_skips_a_static_scene_and_wakes_on_movement() -> None:
    gate = MotionGate(MotionParams(max_interval_s=10))
    still = noise_frame(5)
    runs = [gate.should_detect(i * 0.2, still) for i in range(50)]  # 10 s of nothing
    assert runs[0] and sum(runs) <= 2  # the first frame, then at most the 10 s check
    moving = still.copy()
    cv2.rectangle(moving, (100, 80), (180, 160), (255, 255, 255), -1)
    assert gate.should_detect(10.1, moving)


def box(label: str, x1: float, y1: float, x2: float, y2: float) -> BoundingBox:
    return BoundingBox(label=label, score=0.9, x1=x1, y1=y1, x2=x2, y2=y2)


def test_regions_and_minimum_size() -> None:
    f = RegionFilter(rois=[[(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]], min_height=0.1)
    inside, outside, tiny = box("a", 10, 10, 60, 80), box("a", 200, 10, 260, 80), \
        box("a", 10, 10, 20, 15)
    assert f.apply([inside, outside, tiny], 320, 240) == [inside]
    assert RegionFilter().apply([inside, outside, tiny], 320, 240) == [inside, outside, tiny]


def test_snapshot_is_annotated_and_hashed() -> None:
    frame = noise_frame(3)
    img = annotate(frame, [box("no_mask", 10, 20, 100, 120)], {"no_mask"}, "cam-1", utcnow(),
                   "no_mask raised")
    assert img.shape == frame.shape and not np.array_equal(img, frame)
    assert (img[21, 10:100] != frame[21, 10:100]).any()  # the box's edge is drawn
    data, sha = encode_jpeg(img)
    assert data[:2] == b"\xff\xd8" and sha == hashlib.sha256(data).hexdigest()
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == frame.shape


@pytest.mark.parametrize("rois", [[[(0.1, 0.1), (0.2, 0.2)]]])
def test_camera_config_refuses_degenerate_roi(rois: list[list[tuple[float, float]]]) -> None:
    from pydantic import ValidationError

    from edge.config import CameraConfig

    with pytest.raises(ValidationError, match="at least 3 points"):
        CameraConfig(device_id="cam-1", source="x.mp4", rois=rois)
