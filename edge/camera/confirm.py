"""Confirming a violation over time: pure, frame timestamps only.

Per camera and violation, every inference is a *hit* (the violation seen) or a miss. A
violation is **raised** when the hit ratio over the trailing ``window_s`` has stayed at or
above ``raise_ratio`` for ``confirm_s``; it is **cleared** when the ratio has stayed at or
below ``clear_ratio`` for ``clear_s``; after a raise, the next raise of the same
violation waits at least ``cooldown_s`` from the previous one. A flicker (one frame, a
passer-by) therefore raises nothing, and one episode is one raise and one clear.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class ConfirmParams:
    window_s: float = 10.0
    raise_ratio: float = 0.6
    confirm_s: float = 5.0
    clear_ratio: float = 0.1
    clear_s: float = 10.0
    cooldown_s: float = 300.0
    min_samples: int = 3  # in the window before any ratio counts


class Change(StrEnum):
    RAISED = "raised"
    CLEARED = "cleared"


@dataclass
class Tracker:
    params: ConfirmParams
    samples: deque[tuple[float, bool]] = field(default_factory=deque)
    active: bool = False
    above_since: float | None = None
    below_since: float | None = None
    last_raised: float | None = None

    def ratio(self) -> float | None:
        if len(self.samples) < self.params.min_samples:
            return None
        return sum(h for _, h in self.samples) / len(self.samples)

    @property
    def pending(self) -> bool:
        """A hit in the window and nothing raised yet: the detector should look closely."""
        return not self.active and any(h for _, h in self.samples)

    def update(self, t: float, hit: bool) -> Change | None:
        """One inference at time ``t`` (seconds, monotonic per camera)."""
        p = self.params
        self.samples.append((t, hit))
        while self.samples and self.samples[0][0] <= t - p.window_s:
            self.samples.popleft()
        r = self.ratio()
        if r is None:
            return None
        if not self.active:
            self.above_since = (self.above_since if self.above_since is not None else t) \
                if r >= p.raise_ratio else None
            cooled = self.last_raised is None or t - self.last_raised >= p.cooldown_s
            if self.above_since is not None and t - self.above_since >= p.confirm_s and cooled:
                self.active, self.last_raised, self.below_since = True, t, None
                return Change.RAISED
            return None
        self.below_since = (self.below_since if self.below_since is not None else t) \
            if r <= p.clear_ratio else None
        if self.below_since is not None and t - self.below_since >= p.clear_s:
            self.active, self.above_since = False, None
            return Change.CLEARED
        return None
