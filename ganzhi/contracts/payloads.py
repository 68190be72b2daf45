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
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

from ganzhi.contracts.bounds import (
    BOXES_MAX,
    READINGS_MAX,
    Detail,
    EventTime,
    FiniteCoordinate,
    Key,
    Label,
    ReportPeriod,
    Text,
    Unit,
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
    ts: EventTime = Field(description="Device clock when the message was made (ISO 8601).")


class Reading(_Strict):
    metric: MetricName
    value: float
    unit: Unit
    ts: EventTime | None = Field(
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
    readings: list[Reading] = Field(min_length=1, max_length=READINGS_MAX)

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
    detail: Detail = Field(default_factory=dict, description="At most 8 KiB as JSON.")


class Violation(StrEnum):
    """What a kitchen camera may report: the allow-list of ``Detection.violation``."""

    NO_CHEF_HAT = "no_chef_hat"
    NO_MASK = "no_mask"
    MASK_WORN_INCORRECTLY = "mask_worn_incorrectly"
    NO_WORK_CLOTHES = "no_work_clothes"
    SMOKING = "smoking"
    PHONE = "phone"
    UNCOVERED_BIN = "uncovered_bin"
    RODENT = "rodent"
    FIRE_UNATTENDED = "fire_unattended"
    CAMERA_OFFLINE = "camera_offline"
    CAMERA_COVERED = "camera_covered"
    CAMERA_FROZEN = "camera_frozen"
    CAMERA_BLURRED = "camera_blurred"


class BoundingBox(_Strict):
    label: Label
    score: float = Field(ge=0, le=1)
    x1: FiniteCoordinate
    y1: FiniteCoordinate
    x2: FiniteCoordinate
    y2: FiniteCoordinate


class Detection(Envelope):
    """A confirmed vision finding of a camera agent."""

    kind: Literal["detection"] = "detection"
    violation: Violation
    state: Literal["raised", "cleared"]
    score: float = Field(ge=0, le=1)
    boxes: list[BoundingBox] = Field(default_factory=list, max_length=BOXES_MAX)
    snapshot_sha256: str | None = Field(default=None, pattern="^[0-9a-f]{64}$")
    model: Label | None = Field(
        default=None, description="The detector that saw it, <model card name>@<version>:"
        " false positives are counted per model.")


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
    storage_key: Text = Field(description="Key in the evidence store (ab/cd/<sha256>.jpg).")


class DeviceStatus(Envelope):
    """Retained online/offline state; the ``offline`` one is also the device's last will."""

    kind: Literal["status"] = "status"
    state: Literal["online", "offline"]
    report_period_s: ReportPeriod | None = Field(
        default=None,
        description="The device reports at least this often (its configured period, at most "
                    "a day); the platform's offline check uses it unless the rules model "
                    "sets one.")


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
    """A message a service refused for good, with the reason; nothing is dropped silently."""

    dl_id: str = Field(default_factory=new_id)
    received_at: EventTime = Field(default_factory=utcnow)
    stage: Literal["ingest", "stream", "alerts"] = Field(
        default="ingest", description="The service that refused it.")
    source_topic: str = Field(
        description="Where it came from: the MQTT topic (ingest) or the Kafka topic.")
    reason: str = Field(description="Short machine-readable cause, e.g. 'invalid_json'.")
    error: str = Field(description="Human-readable detail of what was wrong.")
    payload_b64: str = Field(description="The original payload bytes, base64 (at most "
                                         "512 KiB of them; `error` says when cut).")


class TransitionKind(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class AlertTransition(_Strict):
    """A rule started or stopped firing for one device (stream -> alerts)."""

    transition_id: Key = Field(
        description="Deterministic from fingerprint, kind and event time: replays repeat it."
    )
    kind: TransitionKind
    fingerprint: Key = Field(description="Same condition on the same device = same fingerprint.")
    rule_id: Key
    severity: Severity
    site_id: Identifier
    device_id: Identifier
    started_at: EventTime = Field(description="Event time the condition began.")
    at: EventTime = Field(description="Event time of this transition.")
    summary: Text
    values: Detail = Field(default_factory=dict)


class ClueLinks(_Strict):
    alert: str
    readings: str
    evidence: str | None = Field(
        default=None, description="The snapshot backing this event (camera alerts).")
    incident: str | None = Field(default=None, description="The incident with its history.")


class ClueMember(_Strict):
    """One alert of the clue's incident."""

    alert_id: int
    rule_id: str
    severity: Severity
    device_id: Identifier
    status: Literal["open", "resolved"]
    started_at: EventTime
    ended_at: EventTime | None = None
    summary: Text


ClueEvent = Literal["created", "updated", "escalated", "reopened", "resolved"]


class Clue(_Strict):
    """What a receiver gets (webhook body). One clue per incident: ``created`` first, then,
    in ``seq`` order, ``updated`` (an alert joined, the primary changed), ``escalated``
    (not acknowledged in time), ``reopened`` (the condition came back) and ``resolved``;
    the same ``clue_id`` throughout. The top-level alert fields describe the incident's
    primary alert (the most severe, then the earliest)."""

    clue_id: str
    schema_version: Literal[1] = SCHEMA_VERSION
    event: ClueEvent = "created"
    seq: int = Field(default=0, ge=0, description="0 for created, then +1 per event.")
    incident_id: int | None = None
    alert_id: int
    fingerprint: str
    rule_id: str
    severity: Severity
    site_id: Identifier
    device_id: Identifier
    started_at: EventTime
    summary: Text
    values: dict[str, Any] = Field(default_factory=dict)
    links: ClueLinks
    created_at: EventTime
    ended_at: EventTime | None = None
    members: list[ClueMember] = Field(default_factory=list)
    escalation_level: int = 0
    resolution: dict[str, Any] | None = Field(
        default=None, description="resolved: the clearing transition's summary and values,"
        " or who resolved it by hand and why.")
