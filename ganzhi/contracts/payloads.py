"""Versioned payloads on the wire, as pydantic models.

Device messages (MQTT, then Kafka) share one envelope: a unique ``msg_id``, the
``schema_version``, ``site_id``, ``device_id`` and the device's own timestamp ``ts``.
Platform messages (dead letters, alert transitions, clues) are defined here too, so no
part re-declares a field by hand. ``python -m ganzhi.contracts.schemas`` writes them as
JSON Schema into ``ganzhi/contracts/schemas/``.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

from ganzhi.contracts.topics import ID_PATTERN, Channel

SCHEMA_VERSION: Literal[1] = 1

Identifier = Annotated[str, Field(pattern=f"^{ID_PATTERN}$", examples=["cs-0001"])]
MetricName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.]{0,63}$", examples=["temperature"])]


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceClass(StrEnum):
    COLD_STORE = "cold_store"
    ELEVATOR = "elevator"
    KITCHEN_CAMERA = "kitchen_camera"


class Envelope(_Strict):
    msg_id: uuid.UUID = Field(description="Unique per message; the key of every idempotent sink.")
    schema_version: Literal[1] = SCHEMA_VERSION
    site_id: Identifier
    device_id: Identifier
    ts: AwareDatetime = Field(description="Device clock when the message was made (ISO 8601).")


class Reading(_Strict):
    metric: MetricName
    value: float
    unit: str = Field(max_length=16, examples=["celsius"])
    ts: AwareDatetime | None = Field(
        default=None, description="When this value was sampled; defaults to the envelope's ts."
    )

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("value must be a finite number")
        return v


class Telemetry(Envelope):
    """A batch of readings from one device (batching keeps MQTT message rates sane)."""

    kind: Literal["telemetry"] = "telemetry"
    device_class: DeviceClass
    readings: list[Reading] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _unique_samples(self) -> Telemetry:
        seen = set()
        for r in self.readings:
            key = (r.metric, r.ts or self.ts)
            if key in seen:
                raise ValueError(f"duplicate reading for {r.metric} at {key[1].isoformat()}")
            seen.add(key)
        return self


class Severity(StrEnum):
    INFO = "info"
    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"


class DeviceEvent(Envelope):
    """Something the device itself noticed (alarm button, power lost, Modbus timeout)."""

    kind: Literal["event"] = "event"
    event: MetricName
    severity: Severity = Severity.INFO
    detail: dict[str, Any] = Field(default_factory=dict)


class BoundingBox(_Strict):
    label: str
    score: float = Field(ge=0, le=1)
    x1: float
    y1: float
    x2: float
    y2: float


class Detection(Envelope):
    """A confirmed vision finding of a camera agent."""

    kind: Literal["detection"] = "detection"
    violation: MetricName
    state: Literal["raised", "cleared"]
    score: float = Field(ge=0, le=1)
    boxes: list[BoundingBox] = Field(default_factory=list, max_length=100)
    snapshot_sha256: str | None = Field(default=None, pattern="^[0-9a-f]{64}$")


class Evidence(Envelope):
    """A snapshot (JPEG) that backs a detection, referenced by its SHA-256."""

    kind: Literal["evidence"] = "evidence"
    content_type: Literal["image/jpeg"] = "image/jpeg"
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    data_b64: str = Field(max_length=8_000_000)


class EvidenceRef(Envelope):
    """What the evidence topic carries: where ingest stored a snapshot (not its bytes)."""

    kind: Literal["evidence_ref"] = "evidence_ref"
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    content_type: Literal["image/jpeg"] = "image/jpeg"
    size: int = Field(ge=1)
    storage_key: str = Field(description="Key in the evidence store (ab/cd/<sha256>.jpg).")


class DeviceStatus(Envelope):
    """Retained online/offline state; the ``offline`` one is also the device's last will."""

    kind: Literal["status"] = "status"
    state: Literal["online", "offline"]
    report_period_s: float | None = Field(
        default=None, gt=0,
        description="The device reports at least this often (its configured period); the "
                    "platform's offline check uses it unless the rules model sets one.")


DeviceMessage = Annotated[
    Telemetry | DeviceEvent | Detection | Evidence | DeviceStatus, Field(discriminator="kind")
]
device_message_adapter: TypeAdapter[DeviceMessage] = TypeAdapter(DeviceMessage)

CHANNEL_KIND: dict[Channel, str] = {
    Channel.TELEMETRY: "telemetry",
    Channel.EVENT: "event",
    Channel.DETECTION: "detection",
    Channel.EVIDENCE: "evidence",
    Channel.STATUS: "status",
}


class DeadLetter(_Strict):
    """A message ingest could not accept, with the reason; nothing is dropped silently."""

    dl_id: str = Field(default_factory=new_id)
    received_at: AwareDatetime = Field(default_factory=utcnow)
    source_topic: str
    reason: str = Field(description="Short machine-readable cause, e.g. 'invalid_json'.")
    error: str = Field(description="Human-readable detail of what was wrong.")
    payload_b64: str = Field(description="The original payload bytes, base64.")


class TransitionKind(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class AlertTransition(_Strict):
    """A rule started or stopped firing for one device (stream -> alerts)."""

    transition_id: str = Field(
        description="Deterministic from fingerprint, kind and event time: replays repeat it."
    )
    kind: TransitionKind
    fingerprint: str = Field(description="Same condition on the same device = same fingerprint.")
    rule_id: str
    severity: Severity
    site_id: Identifier
    device_id: Identifier
    started_at: AwareDatetime = Field(description="Event time the condition began.")
    at: AwareDatetime = Field(description="Event time of this transition.")
    summary: str
    values: dict[str, Any] = Field(default_factory=dict)


class ClueLinks(_Strict):
    alert: str
    readings: str
    evidence: str | None = Field(
        default=None, description="The snapshot backing this event (camera alerts).")


class Clue(_Strict):
    """What the task system receives (webhook body): ``created`` when an alert opens,
    ``resolved`` (same ``clue_id``) when it clears."""

    clue_id: str
    schema_version: Literal[1] = SCHEMA_VERSION
    event: Literal["created", "resolved"] = "created"
    alert_id: int
    fingerprint: str
    rule_id: str
    severity: Severity
    site_id: Identifier
    device_id: Identifier
    started_at: AwareDatetime
    summary: str
    values: dict[str, Any] = Field(default_factory=dict)
    links: ClueLinks
    created_at: AwareDatetime
    ended_at: AwareDatetime | None = None
    resolution: dict[str, Any] | None = Field(
        default=None, description="resolved: the clearing transition's summary and values.")
