"""Public response models of the HTTP API: what clients see, never raw database rows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from alerts.actions import (
    ASSIGNEE_MAX,
    COMMENT_MAX,
    NOTE_MAX,
    REASON_MAX,
    FeedbackStatus,
    SilenceKind,
    check_matchers,
)
from api.params import IsoDateTime
from ganzhi.access import Role
from ganzhi.accounts import DISPLAY_NAME_MAX, PASSWORD_MAX, PASSWORD_MIN
from ganzhi.contracts import Severity, TransitionKind

AlertStatus = Literal["open", "resolved"]
Resolution = Literal["raw", "1m", "1h"]
DeliveryStatus = Literal["pending", "delivered", "dead", "dropped"]
ClueEventName = Literal["created", "updated", "escalated", "reopened", "resolved"]
NotifyState = Literal["held", "notified"]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class AlertSummary(_Out):
    id: int
    fingerprint: str
    rule_id: str
    severity: Severity
    site_id: str
    device_id: str
    status: AlertStatus
    started_at: datetime
    ended_at: datetime | None
    summary: str
    values: dict[str, Any]
    updated_at: datetime
    incident_id: int | None = None


class AlertPage(_Out):
    items: list[AlertSummary]
    next_before_id: int | None = Field(
        description="Pass as before_id for the next (older) page; null on the last page."
    )


class AlertEventOut(_Out):
    transition_id: str
    kind: TransitionKind
    at: datetime
    received_at: datetime
    summary: str | None
    values: dict[str, Any]


class ClueDeliveryOut(_Out):
    clue_id: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class AlertDetail(AlertSummary):
    events: list[AlertEventOut]
    clue: ClueDeliveryOut | None  # the clue.created delivery
    clue_resolution: ClueDeliveryOut | None = None  # the clue.resolved delivery


class SeriesPoint(_Out):
    """One sample (raw), or one minute / hour (1m, 1h: value is the mean)."""

    time: datetime
    metric: str
    value: float
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    count: int | None = None
    last: float | None = None


class ReadingSeries(_Out):
    site_id: str
    device_id: str
    metric: str | None
    resolution: Resolution
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    points: list[SeriesPoint]
    truncated: bool = Field(description="More points exist in the range than limit allowed.")


class Health(_Out):
    ok: bool
    db: str


# --- incidents -----------------------------------------------------------------------------


class IncidentSummary(_Out):
    id: int
    group_key: str
    family: str
    site_id: str
    device_id: str | None
    status: AlertStatus
    severity: Severity
    rule_id: str | None = Field(description="The primary alert's rule.")
    summary: str | None = Field(description="The primary alert's summary.")
    primary_alert_id: int | None
    clue_id: str
    notify_state: NotifyState
    held_reason: str | None
    notified_at: datetime | None
    opened_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    resolve_reason: str | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    assignee: str | None
    escalation_level: int
    escalated_at: datetime | None
    reopen_count: int
    task_status: FeedbackStatus | None
    accepted_at: datetime | None
    dispatched_at: datetime | None
    rectified_at: datetime | None
    closed_at: datetime | None
    rejected_at: datetime | None
    false_positive: bool
    updated_at: datetime


class IncidentPage(_Out):
    items: list[IncidentSummary]
    next_before_id: int | None = Field(
        description="Pass as before_id for the next (older) page; null on the last page."
    )


class HistoryEntry(_Out):
    """Who did what, when: people (``key:<name>``), the task system, or ``system``."""

    id: int
    at: datetime
    actor: str
    action: str
    alert_id: int | None
    detail: dict[str, Any]


class ClueEventDelivery(_Out):
    """One clue event of the incident for one receiver (``id``: for drop / requeue)."""

    id: int
    receiver: str
    event: ClueEventName
    seq: int
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class IncidentDetail(IncidentSummary):
    alerts: list[AlertSummary]
    history: list[HistoryEntry]
    deliveries: list[ClueEventDelivery]


class _In(BaseModel):
    """Request bodies: unknown fields are refused (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# Text a person writes: at least one visible character (whitespace is stripped first, so
# the schema says so too, and a client generating from it never sends "   ").
# and never a NUL, which PostgreSQL refuses in text.
_VISIBLE = r"^[^\x00]*[^\s\x00-\x1f\x7f][^\x00]*$"
_NO_NUL = r"^[^\x00]*$"


AssigneeText = Annotated[str, StringConstraints(min_length=1, max_length=ASSIGNEE_MAX,
                                                pattern=_VISIBLE)]
CommentText = Annotated[str, StringConstraints(min_length=1, max_length=COMMENT_MAX,
                                               pattern=_VISIBLE)]
ReasonText = Annotated[str, StringConstraints(min_length=1, max_length=REASON_MAX,
                                              pattern=_VISIBLE)]


class AckIn(_In):
    note: Annotated[str | None, Field(max_length=NOTE_MAX, pattern=_NO_NUL)] = None


class AssignIn(_In):
    assignee: AssigneeText


class CommentIn(_In):
    text: CommentText


class ResolveIn(_In):
    reason: ReasonText


class FeedbackIn(_In):
    status: FeedbackStatus
    at: IsoDateTime | None = Field(
        default=None, description="When the task reached this state; default: now.")
    task_id: Annotated[str | None, Field(max_length=200, pattern=_NO_NUL)] = None
    note: Annotated[str | None, Field(max_length=NOTE_MAX, pattern=_NO_NUL)] = None


class FeedbackOut(_Out):
    recorded: bool = Field(description="False: this clue already had this status.")


# --- silences ------------------------------------------------------------------------------


Glob = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=_VISIBLE)]


class MatchersIn(_In):
    """Globs (``*``, ``?``, ``[…]``) on the alert's fields; at least one."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    site_id: Glob | None = None
    device_id: Glob | None = None
    rule_id: Glob | None = None
    severity: Glob | None = None


class SilenceIn(_In):
    kind: SilenceKind = "silence"
    matchers: MatchersIn
    starts_at: IsoDateTime | None = Field(default=None, description="Default: now.")
    ends_at: IsoDateTime
    reason: ReasonText

    @field_validator("matchers", mode="after")
    @classmethod
    def _matchers(cls, v: MatchersIn) -> MatchersIn:
        check_matchers(v.model_dump(exclude_none=True))
        return v

    def matcher_dict(self) -> dict[str, str]:
        return check_matchers(self.matchers.model_dump(exclude_none=True))


class SilenceOut(_Out):
    id: int
    kind: SilenceKind
    matchers: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    reason: str
    created_at: datetime
    ended_at: datetime | None
    ended_by: str | None


# --- receivers -----------------------------------------------------------------------------


class DeliveryAttempt(_Out):
    outbox_id: int
    clue_id: str
    event: ClueEventName
    seq: int
    attempt: int
    at: datetime
    status_code: int | None
    outcome: str
    latency_ms: float
    error: str | None


class ReceiverOut(_Out):
    name: str
    configured: bool = Field(description="False: only rows of it remain in the outbox.")
    pending: int
    held: int = Field(description="Pending behind a dead earlier event of their clue.")
    dead: int
    oldest_pending_s: float
    last_attempts: list[DeliveryAttempt]


class DropIn(_In):
    ids: Annotated[list[int] | None, Field(min_length=1, max_length=10_000)] = None
    before: IsoDateTime | None = Field(
        default=None, description="Only events created before this time.")


class RequeueIn(_In):
    ids: Annotated[list[int] | None, Field(min_length=1, max_length=10_000)] = None


class RowsOut(_Out):
    receiver: str
    rows: int = Field(description="How many clue events were dropped / re-queued.")


# --- statistics ----------------------------------------------------------------------------


class HandlingRow(_Out):
    key: str = Field(description="The site id, or the primary alert's rule id.")
    incidents: int
    acknowledged: int
    ack_median_s: float | None
    ack_p90_s: float | None
    dispatch_median_s: float | None
    dispatch_p90_s: float | None
    close_median_s: float | None
    close_p90_s: float | None
    false_positives: int


class HandlingStats(_Out):
    since: datetime
    until: datetime
    group_by: Literal["site", "rule"]
    items: list[HandlingRow]


class FalsePositiveRow(_Out):
    rule_id: str
    camera_model: str
    count: int


class FalsePositiveStats(_Out):
    since: datetime
    until: datetime
    items: list[FalsePositiveRow]


# --- sign-in, accounts, audit ---------------------------------------------------------------


class _Secrets(BaseModel):
    """Bodies carrying a password or token: unknown fields refused, nothing stripped (a
    password may begin or end with a space)."""

    model_config = ConfigDict(extra="forbid")


class LoginIn(_Secrets):
    # No control characters: no account has them, and PostgreSQL refuses NUL in text.
    username: Annotated[str, Field(min_length=1, max_length=64,
                                   pattern=r"^[^\x00-\x1f\x7f]+$")]
    password: Annotated[str, Field(min_length=1, max_length=PASSWORD_MAX)]


class RefreshIn(_Secrets):
    refresh_token: Annotated[str, Field(min_length=1, max_length=200,
                                        pattern=r"^[^\x00-\x1f\x7f]+$")]


class TokenOut(_Out):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds the access token lives.")
    refresh_token: str = Field(description="Opaque; single use: each refresh answers a new"
                                           " one, and using an old one ends the session.")
    username: str
    role: Role
    jurisdiction_path: str


class UserOut(_Out):
    id: int
    username: str
    display_name: str
    role: Role
    jurisdiction_id: str
    jurisdiction_path: str
    created_at: datetime
    disabled_at: datetime | None


class UserIn(_Secrets):
    username: Annotated[str, Field(min_length=2, max_length=64)]
    display_name: Annotated[str, Field(max_length=DISPLAY_NAME_MAX)] = ""
    password: Annotated[str, Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)]
    role: Role
    jurisdiction_id: Annotated[str, Field(min_length=1, max_length=64)]


class UserPatch(_Secrets):
    display_name: Annotated[str | None, Field(max_length=DISPLAY_NAME_MAX)] = None
    role: Role | None = None
    jurisdiction_id: Annotated[str | None, Field(min_length=1, max_length=64)] = None
    disabled: bool | None = Field(default=None, description="True disables the account and"
                                                           " ends its sessions.")
    password: Annotated[str | None, Field(min_length=PASSWORD_MIN,
                                          max_length=PASSWORD_MAX)] = Field(
        default=None, description="A new password; ends the account's sessions.")


class AuditEntry(_Out):
    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    site_id: str | None
    jurisdiction_path: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditPage(_Out):
    items: list[AuditEntry]
    next_before_id: int | None = Field(
        description="Pass as before_id for the next (older) page; null on the last page.")


# --- the console (docs/access.md "The console's endpoints") --------------------------------


class MeOut(_Out):
    """Who the caller is and what it may do, for the console to show and to hide what
    it may not do (the API still checks every call)."""

    kind: Literal["user", "key"]
    username: str = Field(description="The account's name, or the API key's name.")
    display_name: str | None = Field(description="Accounts only.")
    role: Role | None = Field(description="Accounts only; a key has scopes instead.")
    jurisdiction_id: str | None = Field(description="The node the caller is bound to; null"
                                                    " for a key bound to none.")
    jurisdiction_path: str | None = Field(description="That node's path; null for a key"
                                                      " bound to none.")
    site_ids: list[str] | None = Field(description="A key limited to these sites.")
    sees_everything: bool = Field(description="True: every site, registered or not.")
    permissions: list[str]


class LiveEvent(_Out):
    """The data of an ``incident`` event of ``GET /api/v1/live``."""

    history_id: int
    incident_id: int
    action: str
    at: datetime
    actor: str | None
    incident: IncidentSummary


IncidentType = Literal["cold_chain", "elevator", "vision", "device", "other"]


class JurisdictionCounts(_Out):
    jurisdiction_id: str
    name: str
    path: str
    open: int
    critical: int = Field(description="Open and critical.")
    opened_24h: int


class TypeCounts(_Out):
    type: IncidentType = Field(description="The primary alert's rule id's first part.")
    open: int
    critical: int = Field(description="Open and critical.")
    opened_24h: int


class HandlingSummary(_Out):
    """Incidents of the last 30 days whose clue went out, the whole scope."""

    ack_median_s: float | None
    ack_p90_s: float | None
    close_median_s: float | None
    close_p90_s: float | None
    incidents: int
    false_positives: int


class Overview(_Out):
    generated_at: datetime
    open_total: int
    open_critical_total: int
    by_jurisdiction: list[JurisdictionCounts] = Field(
        description="The children of the caller's node (of the root nodes for a caller who"
                    " sees everything); the node itself when it has none.")
    by_type: list[TypeCounts]
    open_critical: list[IncidentSummary] = Field(description="Newest first, at most 20.")
    opened_24h: int
    resolved_24h: int
    handling: HandlingSummary


class RiskItem(_Out):
    site_id: str
    name: str | None = Field(description="Null: the site is not registered.")
    jurisdiction_id: str | None
    score: float = Field(ge=0, le=100)
    incidents: int = Field(description="Opened in the window, false positives included.")
    critical: int
    open: int
    unresolved_hours: float
    false_positives: int


class RiskTable(_Out):
    since: datetime
    until: datetime
    formula: str
    items: list[RiskItem] = Field(description="Highest score first.")


class TrendDay(_Out):
    day: str = Field(description="The UTC day, YYYY-MM-DD.")
    opened: int
    critical: int
    by_type: dict[str, int]
    open_hours: float = Field(ge=0, le=24)
    compliance: float = Field(ge=0, le=1)


class Trend(_Out):
    site_id: str | None
    since: datetime
    until: datetime
    days: list[TrendDay] = Field(description="One per UTC day, oldest first.")


KeyScope = Literal["feedback", "staff", "silences", "operator", "export", "provisioning"]


class ApiKeyIn(_In):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    scopes: Annotated[list[KeyScope], Field(min_length=1, max_length=6)]
    jurisdiction_id: Annotated[str | None, Field(
        min_length=1, max_length=64, description="The node the key is limited to (its"
        " sites); required below the root.")] = None
    site_ids: Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]] | None,
                        Field(min_length=1, max_length=1000, description=(
                            "Further limited to these sites (under the node)."))] = None
    expires_at: IsoDateTime | None = None


class ApiKeyOut(_Out):
    id: str
    name: str
    scopes: list[str]
    site_ids: list[str] | None
    jurisdiction_id: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    token: str = Field(description="Shown this once: keep it secret; only a hash is stored.")
