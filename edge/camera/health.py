"""Camera health without a model: dark or covered lens, blur, frozen picture, no frames.

:func:`measure` reduces a frame to a few numbers; :class:`HealthMonitor` turns them into
conditions confirmed like violations (:mod:`edge.camera.confirm`): ``camera_covered``
(mean brightness below ``dark_mean`` or almost no contrast), ``camera_blurred``
(variance of the Laplacian below ``blur_var``), ``camera_frozen`` (consecutive frames
practically identical; a live kitchen always has sensor noise and movement) and
``camera_offline`` (no frame for ``offline_after_s``, judged on the agent's clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.camera.confirm import Change, ConfirmParams, Tracker

COVERED, BLURRED, FROZEN, OFFLINE = (
    "camera_covered", "camera_blurred", "camera_frozen", "camera_offline")


@dataclass(frozen=True)
class HealthParams:
    dark_mean: float = 25.0  # 0-255
    flat_std: float = 6.0
    blur_var: float = 40.0  # Laplacian variance on the 320-px grey frame
    frozen_diff: float = 0.3  # mean absolute difference, 0-255
    offline_after_s: float = 30.0
    confirm: ConfirmParams = field(default_factory=lambda: ConfirmParams(
        window_s=20.0, raise_ratio=0.9, confirm_s=15.0, clear_ratio=0.2, clear_s=10.0,
        cooldown_s=300.0))


@dataclass(frozen=True)
class FrameStats:
    mean: float
    std: float
    sharpness: float
    grey: NDArray[np.uint8]  # small grey copy, for the frozen test


def measure(frame: NDArray[np.uint8], width: int = 320) -> FrameStats:
    h, w = frame.shape[:2]
    small = cv2.resize(frame, (width, max(1, round(h * width / w))),
                       interpolation=cv2.INTER_AREA)
    grey = np.asarray(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), dtype=np.uint8)
    sharp = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    return FrameStats(float(grey.mean()), float(grey.std()), sharp, grey)


class HealthMonitor:
    def __init__(self, params: HealthParams | None = None) -> None:
        self.p = params or HealthParams()
        self.trackers = {k: Tracker(self.p.confirm) for k in (COVERED, BLURRED, FROZEN)}
        self.offline = False
        self._prev: NDArray[np.uint8] | None = None
        self.last_seen: float | None = None  # agent clock (monotonic) of the last frame

    def seen(self, now: float) -> None:
        """A frame arrived at ``now`` on the agent's clock (what ``tick`` compares with)."""
        self.last_seen = now

    def frame(self, t: float, stats: FrameStats) -> dict[str, Change]:
        """A frame at ``t`` (frame time); returns the conditions raised or cleared now."""
        out: dict[str, Change] = {}
        if self.offline:
            self.offline = False
            out[OFFLINE] = Change.CLEARED
        covered = stats.mean < self.p.dark_mean or stats.std < self.p.flat_std
        blurred = not covered and stats.sharpness < self.p.blur_var
        frozen = False
        if self._prev is not None and self._prev.shape == stats.grey.shape:
            diff = float(cv2.absdiff(self._prev, stats.grey).mean())
            frozen = diff < self.p.frozen_diff and not covered
        self._prev = stats.grey
        for name, cond in ((COVERED, covered), (BLURRED, blurred), (FROZEN, frozen)):
            change = self.trackers[name].update(t, cond)
            if change is not None:
                out[name] = change
        return out

    def tick(self, now: float) -> dict[str, Change]:
        """Agent clock tick: raises ``camera_offline`` once frames stop coming."""
        since = self.last_seen
        if not self.offline and since is not None and now - since >= self.p.offline_after_s:
            self.offline = True
            return {OFFLINE: Change.RAISED}
        return {}

    def started(self, now: float) -> None:
        """The agent started watching (a camera that never delivers goes offline too)."""
        if self.last_seen is None:
            self.last_seen = now
