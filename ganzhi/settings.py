"""All configuration in one typed place.

Every knob is an environment variable: ``GANZHI_<SECTION>__<FIELD>``, for example
``GANZHI_MQTT__PORT=1884`` or ``GANZHI_WEBHOOK__URL=https://tasks.example/clues``.
A ``.env`` file in the working directory is read too, and so are secret files: one file
per setting, named as its variable (``GANZHI_DB__DSN``), in the directory
``GANZHI_SECRETS_DIR`` names or else in systemd's ``$CREDENTIALS_DIRECTORY`` (the unit's
``LoadCredential=`` lines), so each service gets only its own secrets (a Kubernetes
secret or a Docker secret mounted as a directory works the same). An environment
variable wins over a file. Secrets are ``SecretStr`` so they never print in logs or
reprs.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ganzhi.contracts.bounds import KAFKA_RECORD_MAX_BYTES


class MqttSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: Path | None = None
    keepalive_s: int = 30
    # MQTT v5 shared subscription group: every ingest worker in it gets a share. A secret
    # (`ganzhi credentials share-group` makes one): the broker's ACL cannot refuse a
    # subscription, so a device that knew the name could join and make messages vanish.
    share_group: SecretStr | None = None
    # Persistent session: messages wait in the broker while ingest is down.
    session_expiry_s: int = 7 * 24 * 3600
    # Bound on QoS 1 messages received but not yet acknowledged (paho loses
    # messages past 65,535 outstanding ones; the broker honours receive_maximum).
    receive_maximum: int = 1000
    # Device provisioning (Mosquitto's dynamic-security plugin): the broker's admin
    # account, which may only use $CONTROL/dynamic-security/#. Needed only by provisioning
    # (API, CLI); it reaches the broker at host:port above, so use TLS or loopback.
    admin_username: str | None = None
    admin_password: SecretStr | None = None
    # The broker as edge boxes reach it, for the config snippet provisioning hands out.
    edge_host: str | None = None  # default: host
    edge_port: int = Field(default=8883, ge=1, le=65535)
    edge_tls: bool = True
    edge_ca_file: str = "/etc/ganzhi-edge/ca.crt"
    edge_secrets_dir: str = "/etc/ganzhi-edge/secrets"


class KafkaSettings(BaseModel):
    bootstrap: str = "127.0.0.1:9092"
    partitions: int = Field(default=4, ge=1)
    # Topics the services create when missing (docs/operations.md, "Kafka"): a production
    # cluster wants 3 and min_insync_replicas 2 (with the producers' acks=all, a record is
    # acknowledged once two brokers hold it). The embedded demo broker has one broker.
    replication_factor: int = Field(default=1, ge=1)
    min_insync_replicas: int | None = Field(default=None, ge=1)
    # Every Kafka client of the platform (ingest, stream, alerts, the admin calls) uses
    # these. Without them anyone who reaches the brokers could write alert transitions
    # that go out as signed clues. SSL: TLS, the brokers' certificates checked against
    # ssl_cafile (the system's CAs if unset), a client certificate if ssl_certfile and
    # ssl_keyfile are set (brokers requiring mutual TLS). SASL_SSL: TLS plus a user
    # (SCRAM preferred); SASL_PLAINTEXT only for a network that is already private.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_keyfile_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # The stream worker's producer batch (bytes; transitions and dead letters). It was 1
    # while rule state went to a changelog that Faust read "up to the end" (Tansu reports
    # a partition's end offset as the start of its last batch + 1); no reader of the
    # platform does that since rule state is checkpointed to PostgreSQL.
    producer_max_batch_size: int = 16384
    linger_ms: int = 5
    # The largest record the brokers take (message.max.bytes); bigger ones are
    # dead-lettered before producing, not retried.
    max_record_bytes: int = KAFKA_RECORD_MAX_BYTES
    # Consumer groups (stream, alerts): a member that dies is noticed after the session
    # timeout, and its partitions move. Short, so processing resumes within seconds of a
    # crash; the heartbeat must be well under it.
    group_session_timeout_s: float = 6.0
    group_heartbeat_s: float = 1.5
    group_rebalance_timeout_s: float = 20.0

    @model_validator(mode="after")
    def _security_is_complete(self) -> KafkaSettings:
        # (A SASL user and password are required where a Kafka client is made, see
        # ganzhi.kafka: a service without Kafka, the API, shares these settings.)
        sasl = self.security_protocol.startswith("SASL")
        if not sasl and (self.sasl_username or self.sasl_password):
            raise ValueError("sasl_username/sasl_password are set but security_protocol "
                             f"is {self.security_protocol}: they would not be used")
        if self.security_protocol == "SASL_PLAINTEXT" and self.sasl_mechanism == "PLAIN":
            raise ValueError("SASL PLAIN without TLS sends the password in clear: use "
                             "SASL_SSL, or a SCRAM mechanism")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together (a client "
                             "certificate and its key)")
        tls_files = (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)
        if not self.security_protocol.endswith("SSL") and any(tls_files):
            raise ValueError("ssl_* files are set but security_protocol is "
                             f"{self.security_protocol}: they would not be used")
        for f in tls_files:
            if f is not None and not f.is_file():
                raise ValueError(f"{f}: no such file")
        if (self.min_insync_replicas is not None
                and self.min_insync_replicas > self.replication_factor):
            raise ValueError(f"min_insync_replicas {self.min_insync_replicas} is more than "
                             f"replication_factor {self.replication_factor}: nothing could "
                             "be written")
        return self


class DatabaseSettings(BaseModel):
    dsn: SecretStr = SecretStr("postgresql://ganzhi@127.0.0.1:5433/ganzhi")
    pool_min: int = 1
    pool_max: int = 8
    # Raw readings older than this are dropped by `ganzhi maintain` (TimescaleDB
    # retention policy, or dropping daily partitions on plain PostgreSQL).
    retention_days: int = Field(400, ge=1)
    # Resolved incidents (with their alerts, clue records and history) kept this long.
    alerts_retention_days: int = Field(1095, ge=1)
    # Webhook delivery attempts (one row per try) kept this long.
    deliveries_retention_days: int = Field(180, ge=1)
    # Evidence files no alert names are removed once this old (file store only).
    evidence_grace_days: int = Field(7, ge=1)
    # TimescaleDB at the first migrate: auto (if installed, supported and preloaded),
    # on (an error if it cannot be used), off (plain PostgreSQL). ganzhi.db.timescaledb.
    timescaledb: Literal["auto", "on", "off"] = "auto"
    # The console's heavy reads (readings and rollups, statistics) from a read replica;
    # unset: the primary. The API's connections to it are read-only sessions.
    read_dsn: SecretStr | None = None


class ColdChainRuleSettings(BaseModel):
    """Defaults of the cold-chain excursion rule; a rules file may override per device."""

    metric: str = "temperature"
    # GB/T 24616: chilled goods below 8 °C.
    limit_c: float = 8.0
    # Temperature must stay above the limit this long before an alert fires.
    duration_s: float = 600.0
    # Clears only below limit - hysteresis, held for clear_duration_s.
    hysteresis_c: float = 1.0
    clear_duration_s: float = 120.0
    # Readings up to this much older than the newest one are placed in order;
    # older ones are counted and dropped.
    allowed_lateness_s: float = 120.0
    severity: str = "major"


class HealthRuleSettings(BaseModel):
    """Defaults of ``device.offline``; the rules model may override per site and device."""

    # How often a device reports at the least (its report period).
    expected_interval_s: float = 60.0
    # Offline after this many expected intervals of silence.
    missed_intervals: float = 3.0


class StreamSettings(BaseModel):
    app_id: str = "ganzhi-stream"
    data_dir: Path = Path("var/stream")
    batch_size: int = 2000
    batch_within_s: float = 0.1
    web_port: int = 6066
    # Rules model: this YAML file, then the rule_config table on top (either optional).
    rules_file: Path | None = None
    rules_from_db: bool = True
    # How often the rules file and table are checked for changes.
    rules_poll_s: float = 2.0
    # Device-offline timer period (processing time).
    health_tick_s: float = 5.0
    # Least time between two compactions of the rollup deltas into rollups_1m/1h.
    rollup_compact_s: float = 5.0
    # A compaction also starts once a worker has written this many delta rows since the
    # last one (0: by time only): under load the pending deltas, which every read of the
    # live views scans, stay few, and each compaction is short. Compactions run in the
    # background of the writes, on a connection of their own.
    rollup_compact_rows: int = Field(default=20_000, ge=0)
    # A periodic compaction moves the deltas of minutes that ended at least this long ago
    # (by the clock), so a minute's rollup row is written about once, not at every
    # compaction while its minute is open (readers merge the pending deltas). Readings
    # later than this still count, at the cost of a second write of their minute's row.
    rollup_settle_s: float = 15.0
    # The open minutes' deltas wait in rollup_deltas, which every read of the live views
    # scans: once a worker has this many pending (and at least two per bucket), its next
    # compaction collapses them to one per bucket. About 10 ms of a rollup read per
    # 100,000 pending deltas; each collapse rewrites the open buckets' deltas once.
    rollup_collapse_rows: int = Field(default=100_000, ge=0)
    # How often the rule state changed since the last checkpoint is saved to PostgreSQL
    # with the offsets it reflects (stream/checkpoints.py). After a crash the records of
    # up to this long are processed again; shorter costs more writes of the same states.
    checkpoint_s: float = Field(default=5.0, gt=0)
    cold_chain: ColdChainRuleSettings = Field(default_factory=ColdChainRuleSettings)
    device_health: HealthRuleSettings = Field(default_factory=HealthRuleSettings)


class WebhookSettings(BaseModel):
    """The task system's receiver (named ``task-system``) and what every receiver shares."""

    url: str | None = None
    # HMAC key of the clue signatures, shared with the task system; at least 32 characters.
    secret: SecretStr | None = None
    key_id: str = "k1"
    previous_secret: SecretStr | None = None
    previous_key_id: str | None = None
    timeout_s: float = 5.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    # How often an idle dispatcher looks for due outbox rows: the longest a new clue waits
    # before its first attempt (docs/performance.md, "Alert latency"). One indexed query
    # per receiver each time; the outbox figures are refreshed at most once a second.
    poll_interval_s: float = 0.1
    # Where the task system can fetch evidence; put into each clue's links.
    public_base_url: str = "http://127.0.0.1:8000"


class EvidenceSettings(BaseModel):
    """Where ingest stores evidence snapshots and the API reads them."""

    backend: Literal["fs", "s3"] = "fs"
    dir: Path = Path("var/evidence")
    s3_endpoint: str | None = None  # e.g. http://minio:9000; None: AWS
    s3_bucket: str = "ganzhi-evidence"
    s3_region: str | None = None
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None


class IngestSettings(BaseModel):
    # Stable per worker: the broker keeps this worker's persistent session under it.
    worker_id: str = "ingest-1"
    # Messages produced to Kafka before their MQTT acknowledgements are sent.
    batch_max: int = 500


class EventTimeSettings(BaseModel):
    """Event times accepted around the receive time (ingest; the stream checks the
    future bound again). Outside: dead letter ``ts_too_old`` / ``ts_in_future``. An edge
    box flushing its spool after an outage sends old data, so the age allows weeks; a
    clock ahead would push a device's watermark into the future and its data be late."""

    max_age_s: float = Field(default=30 * 86_400.0, gt=0, le=3650 * 86_400.0)
    max_ahead_s: float = Field(default=300.0, ge=0, le=86_400.0)


class FamilySettings(BaseModel):
    """A correlation family: alerts whose rule matches one of ``rules`` (globs) on one
    device (``scope`` device) or one site (``scope`` site) join one incident.
    ``joins_open``: an alert of this family joins whatever incident of its device is
    open (a device going offline with what it was raising) and only forms its own when
    there is none."""

    name: str
    rules: list[str]
    scope: Literal["device", "site"] = "device"
    joins_open: bool = False


class InhibitionSettings(BaseModel):
    """While an alert of a ``source`` rule is open on a device, that device's alerts of the
    ``targets`` rules (globs) raise no clue; they are recorded, and the clue goes out if
    they still hold when the source clears."""

    source: list[str]
    targets: list[str] = Field(default_factory=lambda: ["*"])


class EscalationStep(BaseModel):
    """An incident of this severity, notified and not acknowledged for ``after_s``
    (wall-clock, from its clue or its previous escalation), escalates: its clue goes to
    ``receivers`` as well (by name) and its severity is raised to ``raise_to``."""

    after_s: float = Field(gt=0)
    raise_to: Literal["minor", "major", "critical"] | None = None
    receivers: list[str] = Field(default_factory=list)


class ReceiverSettings(BaseModel):
    """Where clues go: a webhook, its signing key, and which incidents it takes. Empty
    filters take everything; ``sites`` are globs on site ids (a jurisdiction's sites,
    e.g. ``sz-ft-*``), ``rules`` globs on the primary alert's rule."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    url: str
    secret: SecretStr
    key_id: str = "k1"
    # During a rotation: the old key signs too (a second v1= signature), until removed.
    previous_secret: SecretStr | None = None
    previous_key_id: str | None = None
    sites: list[str] = Field(default_factory=list)
    rules: list[str] = Field(default_factory=list)
    min_severity: Literal["minor", "major", "critical"] = "minor"
    # Only incidents escalated to it (EscalationStep.receivers), not the routine ones.
    escalation_only: bool = False
    # Whether it hears that an incident resolved (clue.resolved); others still get it.
    send_resolved: bool = True


def _default_families() -> list[FamilySettings]:
    return [
        FamilySettings(name="cold_chain", rules=["cold_chain.*"]),
        FamilySettings(name="elevator_entrapment", rules=[
            "elevator.trapped_at_level", "elevator.trapped_not_at_level",
            "elevator.emergency_call", "elevator.alarm_button"]),
        FamilySettings(name="device_health", rules=["device.*"], joins_open=True),
    ]


def _default_inhibitions() -> list[InhibitionSettings]:
    return [
        InhibitionSettings(source=["device.offline"]),
        InhibitionSettings(source=["elevator.maintenance_mode", "elevator.inspection_mode"],
                           targets=["elevator.*"]),
    ]


def _default_escalation() -> dict[str, EscalationStep]:
    return {
        "critical": EscalationStep(after_s=900.0),
        "major": EscalationStep(after_s=3600.0, raise_to="critical"),
    }


class AlertsSettings(BaseModel):
    # Static consumer-group membership (KIP-345): a process restarted under the same id
    # takes its partitions back at once instead of after the session timeout and a
    # rebalance. Unique per process (like the ingest worker id); empty for dynamic.
    # (Not for the stream worker: with it, Faust's recovery let its fetcher read before
    # seeking to the committed offsets, and records were skipped - measured.)
    instance_id: str = "alerts-1"
    families: list[FamilySettings] = Field(default_factory=_default_families)
    inhibitions: list[InhibitionSettings] = Field(default_factory=_default_inhibitions)
    # A condition that comes back within this long after its incident resolved reopens it.
    reopen_window_s: float = Field(default=1800.0, ge=0)
    # By the severity of the incident at the time (see EscalationStep).
    escalation: dict[str, EscalationStep] = Field(default_factory=_default_escalation)
    # Receivers besides the one of GANZHI_WEBHOOK__URL (named "task-system"), as JSON.
    receivers: list[ReceiverSettings] = Field(default_factory=list)
    # How often held incidents (silence ended? inhibition cleared?) and escalations are
    # looked at, whether or not messages arrive.
    tick_s: float = Field(default=2.0, gt=0)


class OpsPorts(BaseModel):
    """Metrics and health endpoints, one port per service."""

    # Where they listen: loopback by default; 0.0.0.0 (or the host's address) when a
    # Prometheus on another host or container scrapes them.
    host: str = "127.0.0.1"
    ingest: int = 9101
    stream: int = 9102
    alerts: int = 9103
    edge: int = 9104


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    # The browser console's build, served at /console/ (GANZHI_API__CONSOLE_DIR); None:
    # api/console/dist, where `./dev setup` builds it. Not built: /console/ answers 503.
    console_dir: Path | None = None


class AuthSettings(BaseModel):
    """Staff sign-in: the access tokens' signing key and lifetimes, and login throttling."""

    # HMAC key (HS256) of the access tokens; at least 32 characters. The API refuses to
    # start without it: a guessable key would let anyone mint an administrator's token.
    jwt_secret: SecretStr | None = None
    issuer: str = "ganzhi"
    access_ttl_s: int = Field(default=900, ge=60, le=3600)
    refresh_ttl_s: int = Field(default=7 * 86_400, ge=600, le=90 * 86_400)
    # Failed logins counted over this window: per username, and per client address.
    login_window_s: int = Field(default=900, ge=60)
    max_failures_per_user: int = Field(default=5, ge=1)
    max_failures_per_ip: int = Field(default=20, ge=1)


class DemoSettings(BaseModel):
    # The stand-in task system that receives and verifies clue webhooks in the demo.
    receiver_port: int = 8099
    # Its API key (scope feedback): it then reports accepted ... closed on each clue.
    feedback_token: SecretStr | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GANZHI_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    log_level: str = "INFO"
    log_json: bool = True
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    db: DatabaseSettings = Field(default_factory=DatabaseSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    event_time: EventTimeSettings = Field(default_factory=EventTimeSettings)
    evidence: EvidenceSettings = Field(default_factory=EvidenceSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    ops: OpsPorts = Field(default_factory=OpsPorts)
    api: ApiSettings = Field(default_factory=ApiSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    demo: DemoSettings = Field(default_factory=DemoSettings)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        folder = secrets_dir()
        if folder is None:
            return init_settings, env_settings, dotenv_settings
        return init_settings, env_settings, dotenv_settings, NestedSecretsSettingsSource(
            file_secret_settings, secrets_dir=folder, secrets_dir_missing="error",
            secrets_nested_delimiter="__")


SECRETS_DIR_VARIABLE = "GANZHI_SECRETS_DIR"


def secrets_dir() -> Path | None:
    """Where secret files are read from: ``GANZHI_SECRETS_DIR``, else the credentials
    systemd loaded for the unit, else nowhere."""
    folder = os.environ.get(SECRETS_DIR_VARIABLE) or os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(folder) if folder else None


class InsecureSettingError(ValueError):
    """A secret setting is missing, a known default or too short; names the variable."""


# Values that have been defaults or examples somewhere: never accepted as secrets.
_KNOWN_DEFAULTS = {"change-me", "changeme", "secret", "ganzhi-ingest", "password"}
SHARE_GROUP_MIN = 16
WEBHOOK_SECRET_MIN = 32
JWT_SECRET_MIN = 32


def require_secret(variable: str, value: SecretStr | None, min_length: int) -> str:
    """The secret's value, or :class:`InsecureSettingError` saying what to set."""
    hint = (f"set {variable} to a random value of at least {min_length} characters "
            f"(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    text = value.get_secret_value() if value is not None else ""
    if not text.strip():
        raise InsecureSettingError(f"{variable} is not set: {hint}")
    if text.lower() in _KNOWN_DEFAULTS:
        raise InsecureSettingError(f"{variable} is a well-known default: {hint}")
    if len(text) < min_length:
        raise InsecureSettingError(f"{variable} has {len(text)} characters: {hint}")
    return text


def share_group(s: MqttSettings) -> str:
    return require_secret("GANZHI_MQTT__SHARE_GROUP", s.share_group, SHARE_GROUP_MIN)


def webhook_secret(s: WebhookSettings) -> bytes:
    return require_secret("GANZHI_WEBHOOK__SECRET", s.secret, WEBHOOK_SECRET_MIN).encode()


def jwt_secret(s: AuthSettings) -> str:
    return require_secret("GANZHI_AUTH__JWT_SECRET", s.jwt_secret, JWT_SECRET_MIN)


@lru_cache
def get_settings() -> Settings:
    return Settings()
