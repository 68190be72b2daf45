"""Kitchen-camera findings into alert transitions: pure, no I/O.

The camera agent confirms a violation on the edge (hit ratio over a window, cool-down,
clearing the same way) and publishes a ``Detection`` when it is *raised* and when it is
*cleared*, each with the SHA-256 of an annotated snapshot. Here a raise becomes a FIRING
and the next clear of the same violation its RESOLVED (rule id ``vision.<violation>``),
so a camera finding follows the same alert → clue path as a sensor rule. The clear
carries the fresh snapshot: the evidence of the rectification. ``values.detections``
lists the finding's boxes (label, score, x1, y1, x2, y2 in pixels of the snapshot, which
is the camera frame itself), most confident first, for the console to draw over the
evidence, as many as the alert's bounded values hold; ``boxes`` is the count of all.

A raise while the same violation is already open adds nothing (the agent's cool-down
makes this rare: a restart of the agent, a replay); a clear with nothing open is ignored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import msgspec

from ganzhi.contracts import AlertTransition, BoundingBox, Severity, TransitionKind, Violation
from ganzhi.contracts.bounds import DETAIL_MAX_BYTES
from stream.rules.excursion import from_us, to_us
from stream.rules.identity import fingerprint, transition_id
from stream.rules.record import Record, evolve

PREFIX = "vision."

V = Violation
# Severity per violation; anything not listed is minor.
SEVERITY: dict[Violation, Severity] = {
    V.SMOKING: Severity.MAJOR,
    V.RODENT: Severity.MAJOR,
    V.FIRE_UNATTENDED: Severity.CRITICAL,
    V.CAMERA_OFFLINE: Severity.MAJOR,
    V.CAMERA_COVERED: Severity.MAJOR,
    V.CAMERA_FROZEN: Severity.MAJOR,
    V.CAMERA_BLURRED: Severity.MINOR,
}

SUMMARY: dict[Violation, str] = {
    V.NO_CHEF_HAT: "kitchen staff without a chef hat (未戴厨师帽)",
    V.NO_MASK: "kitchen staff without a mask (未戴口罩)",
    V.MASK_WORN_INCORRECTLY: "mask worn incorrectly (口罩佩戴不规范)",
    V.NO_WORK_CLOTHES: "kitchen staff without work clothes (未穿工作服)",
    V.SMOKING: "smoking in the kitchen (吸烟)",
    V.PHONE: "phone use in the kitchen (玩手机)",
    V.UNCOVERED_BIN: "waste bin uncovered or overflowing (垃圾桶未盖)",
    V.RODENT: "rodent seen (鼠患)",
    V.FIRE_UNATTENDED: "fire left unattended (灶台无人看管)",
    V.CAMERA_OFFLINE: "camera sends no picture",
    V.CAMERA_FROZEN: "camera picture frozen",
    V.CAMERA_BLURRED: "camera picture blurred",
    V.CAMERA_COVERED: "camera lens covered or dark",
}


class VisionState(Record, frozen=True):
    """Open violations of one camera: violation -> event time of its raise (µs)."""

    open: dict[str, int] = msgspec.field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    violation: Violation
    state: Literal["raised", "cleared"]
    ts: datetime
    score: float
    boxes: Sequence[BoundingBox]
    snapshot_sha256: str | None
    model: str | None = None  # the detector, <card name>@<version>


def step(state: VisionState, site_id: str, device_id: str, f: Finding
         ) -> tuple[VisionState, list[AlertTransition]]:
    name = f.violation.value
    rule_id = PREFIX + name
    t = to_us(f.ts)
    if f.state == "raised":
        if name in state.open:
            return state, []
        kind, started = TransitionKind.FIRING, t
        summary = SUMMARY[f.violation]
        new = evolve(state, open={**state.open, name: t})
    else:
        if name not in state.open:
            return state, []
        kind, started = TransitionKind.RESOLVED, state.open[name]
        summary = "rectified: " + SUMMARY[f.violation]
        new = evolve(state, open={k: v for k, v in state.open.items() if k != name})
    fp = fingerprint(rule_id, site_id, device_id)
    start = from_us(started)
    tid = transition_id(fp, kind, start)
    tr = AlertTransition(
        transition_id=tid, kind=kind, fingerprint=fp, rule_id=rule_id,
        severity=SEVERITY.get(f.violation, Severity.MINOR), site_id=site_id,
        device_id=device_id, started_at=start, at=f.ts, summary=summary,
        values=_values(name, f),
    )
    return new, [tr]


def _values(name: str, f: Finding) -> dict[str, Any]:
    values: dict[str, Any] = {
        "violation": name, "score": f.score, "labels": sorted({b.label for b in f.boxes}),
        "boxes": len(f.boxes), "snapshot_sha256": f.snapshot_sha256,
        "model": f.model or "unknown"}
    room = DETAIL_MAX_BYTES - _json_size(values) - len(', "detections": ')
    values["detections"] = detections(f.boxes, room)
    return values


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode())


def detections(boxes: Sequence[BoundingBox], room: int) -> list[dict[str, Any]]:
    """The boxes for ``values.detections``, most confident first, as many as fit in
    ``room`` bytes of JSON (an alert's values are bounded; ``boxes`` keeps the count of
    all of them). Pixels to 0.1, scores to 0.001."""
    out: list[dict[str, Any]] = []
    used = 2  # []
    for b in sorted(boxes, key=lambda b: -b.score):
        d = {"label": b.label, "score": round(b.score, 3), "x1": round(b.x1, 1),
             "y1": round(b.y1, 1), "x2": round(b.x2, 1), "y2": round(b.y2, 1)}
        size = _json_size(d) + 2  # ", "
        if used + size > room:
            break
        out.append(d)
        used += size
    return out
