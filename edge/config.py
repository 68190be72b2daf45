"""The edge agent's configuration: one YAML file per box, validated at start.

Errors name the place in the file (``devices.1.source.registers.0.type: …``) so a
technician can fix a box's file without reading code. Passwords are ``SecretStr`` (never
printed); ``password_file`` keeps them out of the YAML altogether.

``params`` per device or camera declares what the platform's rules need to judge it (a
cold room's variant, an elevator's rated speed and top landing, a camera's scenarios;
:mod:`ganzhi.device_params`), checked here when the box starts. The agent does not send
them: the registry is where the stream reads them, and :meth:`AgentConfig.registry_entries`
gives the rows to import from a box file (docs/rules.md "Device parameters from the
registry").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from edge.sources.modbus import ModbusSourceConfig
from edge.sources.simulated import SimulatorSourceConfig
from edge.spool import WhenFull
from ganzhi import device_params
from ganzhi.contracts import DeviceClass, Violation
from ganzhi.contracts.topics import ID_PATTERN

Identifier = Annotated[str, Field(pattern=f"^{ID_PATTERN}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BrokerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    keepalive_s: int = Field(default=30, ge=5)
    tls: bool = False
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None


class SpoolConfig(_Strict):
    path: Path = Path("/var/lib/ganzhi-edge/spool.db")
    max_messages: int = Field(default=1_000_000, ge=1)
    max_bytes: int = Field(default=1 << 30, ge=1024)
    when_full: WhenFull = WhenFull.DROP_OLDEST


class ReportConfig(_Strict):
    # A reading is sent when it moved by more than its deadband since last sent...
    on_change: bool = True
    deadbands: dict[str, float] = Field(default_factory=dict)
    # ...and every metric at least this often, changed or not (a heartbeat and a record).
    period_s: float = Field(default=60.0, gt=0)


SourceConfig = Annotated[ModbusSourceConfig | SimulatorSourceConfig, Field(discriminator="type")]


class _Credentials(_Strict):
    device_id: Identifier
    username: str | None = Field(
        default=None, description="MQTT user; defaults to '{site_id}/{device_id}'."
    )
    password: SecretStr | None = None
    password_file: Path | None = None

    @model_validator(mode="after")
    def _one_password(self) -> _Credentials:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        return self

    def secret(self) -> str | None:
        if self.password_file is not None:
            return self.password_file.read_text().strip()
        return self.password.get_secret_value() if self.password else None


def _checked_params(device_class: DeviceClass, params: dict[str, Any]) -> dict[str, Any]:
    try:
        return device_params.dump(device_params.validate(device_class, params))
    except ValueError as exc:
        raise ValueError(f"params: {exc}") from None


class DeviceConfig(_Credentials):
    device_class: DeviceClass
    sample_interval_s: float = Field(default=10.0, gt=0)
    report: ReportConfig = Field(default_factory=ReportConfig)
    source: SourceConfig
    params: dict[str, Any] = Field(
        default_factory=dict, description="what the platform's rules need (registry)")

    @model_validator(mode="after")
    def _params(self) -> DeviceConfig:
        self.params = _checked_params(self.device_class, self.params)
        return self


class ConfirmConfig(_Strict):
    """When a violation is raised and cleared (see edge/camera/confirm.py)."""

    window_s: float = Field(default=10.0, gt=0)
    raise_ratio: float = Field(default=0.6, gt=0, le=1)
    confirm_s: float = Field(default=5.0, ge=0)
    clear_ratio: float = Field(default=0.1, ge=0, lt=1)
    clear_s: float = Field(default=10.0, ge=0)
    cooldown_s: float = Field(default=300.0, ge=0)


class ReviewConfig(_Strict):
    """Frames kept for labelling (edge/camera/review.py); off unless ``dir`` is set."""

    dir: Path | None = Field(default=None, description="the box's review queue folder")
    uncertain: tuple[float, float] = Field(
        default=(0.25, 0.5), description="score band of an uncertain detection [low, high)")
    min_interval_s: float = Field(default=30.0, ge=0, description="between uncertain frames")
    max_items: int = Field(default=500, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _band(self) -> ReviewConfig:
        low, high = self.uncertain
        if not 0 <= low < high <= 1:
            raise ValueError(f"uncertain: need 0 <= low < high <= 1, got {low}, {high}")
        return self


class MotionConfig(_Strict):
    min_changed: float = Field(default=0.003, ge=0, le=1)
    pixel_threshold: int = Field(default=25, ge=1, le=255)
    max_interval_s: float = Field(default=10.0, gt=0)


def _env(name: str, default: str) -> Any:
    """The raw text of ``GANZHI_CAMERA_<NAME>``: pydantic converts and checks it like a
    YAML value, so a malformed one is a validation error naming the field, not a crash."""
    return os.environ.get(f"GANZHI_CAMERA_{name.upper()}", default).strip()


class DetectConfig(_Strict):
    """How often and on what the detector runs (edge/camera/schedule.py, docs/performance.md
    "Edge camera"). Each default can be overridden by ``GANZHI_CAMERA_<FIELD>`` in the
    agent's environment; a value in the box's YAML wins over both."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    idle_fps: float = Field(default_factory=lambda: _env("idle_fps", "1.0"), gt=0,
                            le=60, description="detections/s with motion, nothing pending")
    pending_fps: float = Field(
        default_factory=lambda: _env("pending_fps", "5.0"), ge=0, le=60,
        description="detections/s while a violation awaits confirmation (0: as idle)")
    crops: bool = Field(default_factory=lambda: _env("crops", "true"),
                        description="idle detections on the motion region only")
    crop_min_px: int = Field(default_factory=lambda: _env("crop_min_px", "256"), ge=32,
                             description="smallest side of a motion crop, frame pixels")
    crop_max_share: float = Field(
        default_factory=lambda: _env("crop_max_share", "0.6"), gt=0, le=1,
        description="a larger crop (share of the frame) runs on the whole frame")
    crop_native: bool = Field(
        default_factory=lambda: _env("crop_native", "false"),
        description="crops at their own pixels (else at the scale the whole frame runs at)")
    rect: bool = Field(default_factory=lambda: _env("rect", "true"),
                       description="input a stride multiple, not the padded square")
    precision: Literal["auto", "fp32", "int8"] = Field(
        default_factory=lambda: _env("precision", "auto").lower(),
        description="fp32 model.onnx, the card's int8 copy, or auto: int8 where the card "
                    "shows the violation classes kept their recall with it")


class CameraHealthConfig(_Strict):
    dark_mean: float = Field(default=25.0, ge=0, le=255)
    flat_std: float = Field(default=6.0, ge=0)
    blur_var: float = Field(default=40.0, ge=0)
    frozen_diff: float = Field(default=0.3, ge=0)
    offline_after_s: float = Field(default=30.0, gt=0)


Point = tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]]


class CameraConfig(_Credentials):
    """A kitchen camera: the agent reads it, detects, confirms and sends evidence."""

    source: str = Field(description="rtsp:// or http:// URL, a video file, or a device index")
    fps: float = Field(default=5.0, gt=0, le=60, description="frames inspected per second")
    loop: bool = Field(default=False, description="replay a video file when it ends")
    realtime: bool = Field(default=True, description="play a video file at its own speed")
    model_dir: Path = Path("models/ppe")
    violations: dict[str, Violation] | None = Field(
        default=None, description="class -> violation; default: the model card's")
    score_threshold: float | None = Field(default=None, gt=0, lt=1)
    rois: list[list[Point]] = Field(default_factory=list, description="polygons, 0-1 coords")
    min_height: float = Field(default=0.0, ge=0, le=1, description="share of frame height")
    confirm: ConfirmConfig = Field(default_factory=ConfirmConfig)
    motion: MotionConfig = Field(default_factory=MotionConfig)
    detect: DetectConfig = Field(default_factory=DetectConfig)
    health: CameraHealthConfig = Field(default_factory=CameraHealthConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    snapshot_quality: int = Field(default=85, ge=30, le=100)
    report_period_s: float = Field(default=60.0, gt=0, description="heartbeat telemetry")
    threads: int = Field(default=1, ge=1, le=64, description="ONNX Runtime threads")
    params: dict[str, Any] = Field(
        default_factory=dict, description="what the platform's rules need (registry)")

    @model_validator(mode="after")
    def _polygons(self) -> CameraConfig:
        if any(len(p) < 3 for p in self.rois):
            raise ValueError("each roi needs at least 3 points")
        self.params = _checked_params(DeviceClass.KITCHEN_CAMERA, self.params)
        return self


class AgentConfig(_Strict):
    site_id: Identifier
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    metrics_port: int | None = Field(default=9104, ge=0, le=65535)
    in_flight_window: int = Field(default=100, ge=1, le=10_000)
    devices: list[DeviceConfig] = Field(default_factory=list)
    cameras: list[CameraConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_devices(self) -> AgentConfig:
        if not self.devices and not self.cameras:
            raise ValueError("a box needs at least one device or camera")
        ids = [d.device_id for d in self.devices] + [c.device_id for c in self.cameras]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"device ids must be unique: {dupes}")
        return self

    def registry_entries(self) -> list[tuple[str, str, DeviceClass, dict[str, Any]]]:
        """``(site_id, device_id, device_class, params)`` of every device and camera of
        the box: the rows for the registry's ``devices`` table (params validated)."""
        rows = [(self.site_id, d.device_id, d.device_class, dict(d.params))
                for d in self.devices]
        rows += [(self.site_id, c.device_id, DeviceClass.KITCHEN_CAMERA, dict(c.params))
                 for c in self.cameras]
        return rows


class ConfigError(Exception):
    pass


def load_config(path: Path) -> AgentConfig:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        cfg = AgentConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in e['loc']) or '<top>'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        ]
        raise ConfigError(f"{path}: invalid configuration:\n" + "\n".join(lines)) from None
    for dev in cfg.devices:
        if dev.password_file is not None and not dev.password_file.is_file():
            raise ConfigError(f"{path}: device {dev.device_id}: no file {dev.password_file}")
    return cfg
