"""The camera agent's detection schedule and motion crops, without a model: the rate
scheduler, crop geometry, boxes mapped back to the frame, rectangular input, settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edge.camera.confirm import ConfirmParams, Tracker
from edge.camera.motion import MotionGate
from edge.camera.schedule import (
    DetectionSchedule,
    Mode,
    ScheduleParams,
    crop_region,
    crop_scale,
    to_frame,
)
from edge.config import DetectConfig
from vision.card import load_card
from vision.preprocess import canvas_for, letterbox, to_batch
from vision.runtime import pick_precision

FPS = 5


def modes(sched: DetectionSchedule, seconds: float, moved: bool, pending: bool,
          region: bool = True, start: float = 0.0) -> list[Mode]:
    return [sched.decide(start + i / FPS, moved, pending, region)
            for i in range(int(seconds * FPS))]


def test_idle_motion_runs_once_a_second_on_the_crop() -> None:
    out = modes(DetectionSchedule(ScheduleParams(idle_fps=1, pending_fps=5)), 10, True, False)
    assert out.count(Mode.CROP) == 10 and out.count(Mode.FULL) == 0
    assert out[0] is Mode.CROP and out[5] is Mode.CROP and out[1] is Mode.SKIP


def test_idle_motion_without_a_small_region_runs_on_the_whole_frame() -> None:
    out = modes(DetectionSchedule(ScheduleParams(idle_fps=1)), 5, True, False, region=False)
    assert out.count(Mode.FULL) == 5 and Mode.CROP not in out


def test_pending_runs_every_frame_on_the_whole_frame_even_when_still() -> None:
    sched = DetectionSchedule(ScheduleParams(idle_fps=1, pending_fps=5))
    assert modes(sched, 4, moved=False, pending=True) == [Mode.FULL] * 20


def test_still_scene_is_inspected_every_max_interval() -> None:
    sched = DetectionSchedule(ScheduleParams(idle_fps=1, max_interval_s=10))
    out = modes(sched, 30, moved=False, pending=False)
    assert [i / FPS for i, m in enumerate(out) if m is not Mode.SKIP] == [0.0, 10.0, 20.0]


def test_before_settings_detect_every_moving_frame() -> None:
    """idle = pending = the camera's fps, no boost, no crops: the motion gate of before."""
    sched = DetectionSchedule(ScheduleParams(idle_fps=5, pending_fps=0, crops=False))
    assert modes(sched, 4, moved=True, pending=True) == [Mode.FULL] * 20
    assert modes(sched, 4, moved=False, pending=True, start=4)[1:].count(Mode.SKIP) == 19


def test_rate_switches_up_as_soon_as_a_violation_is_pending() -> None:
    sched = DetectionSchedule(ScheduleParams(idle_fps=1, pending_fps=5))
    assert sched.decide(0.0, True, False, True) is Mode.CROP
    assert sched.decide(0.2, True, False, True) is Mode.SKIP
    assert sched.decide(0.4, True, True, True) is Mode.FULL  # a hit came in: full rate
    assert sched.decide(0.6, True, True, True) is Mode.FULL


def test_tracker_is_pending_between_a_hit_and_the_raise() -> None:
    tr = Tracker(ConfirmParams(window_s=10, confirm_s=2, min_samples=3))
    assert not tr.pending
    tr.update(0.0, False)
    assert not tr.pending
    tr.update(0.2, True)
    assert tr.pending
    t = 0.4
    while tr.update(t, True) is None:
        t += 0.2
    assert tr.active and not tr.pending  # raised: the clear needs no full rate


def test_crop_is_grown_to_the_minimum_and_centred_on_the_motion() -> None:
    assert crop_region((300, 150, 340, 210), 640, 360, min_side=256) == (192, 52, 448, 308)


def test_crop_is_shifted_inside_the_frame_at_an_edge() -> None:
    x1, y1, x2, y2 = crop_region((0, 300, 30, 360), 640, 360, min_side=256)  # type: ignore[misc]
    assert (x1, x2 - x1) == (0, 256) and (y2, y2 - y1) == (360, 256)


def test_crop_covering_most_of_the_frame_is_refused() -> None:
    assert crop_region((20, 20, 600, 340), 640, 360, min_side=256, max_share=0.6) is None
    # the margin grows a box past the limit too
    assert crop_region((100, 0, 460, 360), 640, 360, min_side=64, max_share=0.6) is None


def test_boxes_in_the_crop_map_back_to_the_frame() -> None:
    assert to_frame((10.0, 20.0, 110.0, 220.0), (192, 52, 448, 308)) == (202.0, 72.0,
                                                                         302.0, 272.0)


def test_boxes_in_a_scaled_crop_map_back_to_the_frame() -> None:
    scale = crop_scale(640, 360, 448, native=False)
    assert scale == pytest.approx(0.7)  # the scale the whole 640x360 frame runs at
    assert crop_scale(640, 360, 448, native=True) == 1.0
    assert crop_scale(320, 240, 448, native=False) == 1.0  # never upscaled
    assert to_frame((7.0, 14.0, 77.0, 154.0), (192, 52, 448, 308), scale) == pytest.approx(
        (202.0, 72.0, 302.0, 272.0))


def test_crop_runs_at_its_own_pixels_on_a_stride_multiple_input() -> None:
    crop = np.zeros((200, 250, 3), np.uint8)
    batch, fits = to_batch([crop], 448, rect=True, upscale=False)
    assert batch.shape == (1, 3, 224, 256)  # no upscaling, padded to multiples of 32
    fit = fits[0]
    assert fit.scale == 1.0 and (fit.pad_x, fit.pad_y) == (3.0, 12.0)
    back = fit.to_frame(np.array([[3, 12, 253, 212]], np.float32))
    assert back[0].tolist() == pytest.approx([0, 0, 250, 200])
    # and then into the frame: crop (x1, y1) = (192, 52)
    assert to_frame(tuple(back[0].tolist()), (192, 52, 442, 252)) == pytest.approx(  # type: ignore[arg-type]
        (192, 52, 442, 252))


def test_rect_input_for_a_wide_frame_is_not_the_square() -> None:
    frame = np.zeros((360, 640, 3), np.uint8)
    batch, _ = to_batch([frame], 448, rect=True)
    assert batch.shape == (1, 3, 256, 448)  # 448x252 -> 256 rows, not 448
    assert canvas_for([(448, 252)], 448, rect=False) == (448, 448)
    img, fit = letterbox(frame, 448, canvas=(448, 256))
    assert img.shape == (256, 448, 3) and fit.pad_y == 2.0
    back = fit.to_frame(np.array([[0, 2, 448, 254]], np.float32))
    assert back[0].tolist() == pytest.approx([0, 0, 640, 360], abs=0.01)


def test_a_big_crop_is_scaled_down_to_the_input_size() -> None:
    batch, fits = to_batch([np.zeros((600, 300, 3), np.uint8)], 448, rect=True, upscale=False)
    assert batch.shape == (1, 3, 448, 224) and fits[0].scale == pytest.approx(448 / 600)


def noisy(rng: np.random.Generator) -> np.ndarray:
    img = np.full((360, 640, 3), 120, np.uint8)
    return np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)


def test_motion_region_boxes_the_mover_in_frame_pixels() -> None:
    rng = np.random.default_rng(0)
    gate = MotionGate()
    for _ in range(5):
        assert gate.observe(noisy(rng)) is False or gate.region is None
    assert gate.observe(noisy(rng)) is False and gate.region is None
    frame = noisy(rng)
    frame[100:260, 400:460] = 20  # someone dark steps in
    assert gate.observe(frame)
    assert gate.region is not None
    x1, y1, x2, y2 = gate.region
    assert 380 <= x1 <= 400 and 460 <= x2 <= 480 and 80 <= y1 <= 100 and 260 <= y2 <= 280


def test_detect_settings_have_typed_defaults_overridable_by_env(
        monkeypatch: pytest.MonkeyPatch) -> None:
    d = DetectConfig()
    assert (d.idle_fps, d.pending_fps, d.crops, d.rect, d.precision) == (1.0, 5.0, True, True,
                                                                          "auto")
    monkeypatch.setenv("GANZHI_CAMERA_IDLE_FPS", "2.5")
    monkeypatch.setenv("GANZHI_CAMERA_CROPS", "false")
    monkeypatch.setenv("GANZHI_CAMERA_PRECISION", "fp32")
    d = DetectConfig()
    assert (d.idle_fps, d.crops, d.precision) == (2.5, False, "fp32")
    assert DetectConfig(idle_fps=3).idle_fps == 3  # the box's YAML wins
    monkeypatch.setenv("GANZHI_CAMERA_IDLE_FPS", "0")
    with pytest.raises(ValueError):
        DetectConfig()


def test_auto_precision_takes_int8_only_where_the_violation_classes_kept_recall() -> None:
    models = Path(__file__).resolve().parents[2] / "models"
    ppe, mask = load_card(models / "ppe"), load_card(models / "mask")
    assert ppe.int8 is not None and mask.int8 is not None
    assert pick_precision(ppe, "auto", ppe.violations) == "int8"
    # At its chosen threshold no_mask lost 0.026 of its recall with INT8: FP32 stays
    assert pick_precision(mask, "auto", mask.violations) == "fp32"
    assert pick_precision(mask, "auto", ["mask_incorrect"]) == "int8"
    assert pick_precision(ppe, "fp32", ppe.violations) == "fp32"
    assert pick_precision(mask, "int8", mask.violations) == "int8"


@pytest.mark.parametrize(("name", "value", "field"), [
    ("IDLE_FPS", "abc", "idle_fps"), ("CROPS", "maybe", "crops"),
    ("PRECISION", "fp16", "precision"), ("CROP_MIN_PX", "1.5", "crop_min_px"),
])
def test_a_malformed_env_value_is_a_validation_error_naming_the_field(
        monkeypatch: pytest.MonkeyPatch, name: str, value: str, field: str) -> None:
    monkeypatch.setenv(f"GANZHI_CAMERA_{name}", value)
    with pytest.raises(ValidationError) as err:
        DetectConfig()
    assert err.value.errors()[0]["loc"] == (field,)
