"""What the registry accepts and answers: jurisdiction nodes, sites and devices. Pure.

Ids: a jurisdiction id is lower-case letters, digits, ``_`` and ``-`` (it is part of the
node's path); a site or device id is the id of every MQTT topic and alert
(:data:`ganzhi.contracts.topics.ID_PATTERN`). Ids never change; everything else may.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from ganzhi import device_params
from ganzhi.contracts.payloads import DeviceClass
from ganzhi.contracts.topics import ID_PATTERN

JURISDICTION_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
SITE_ID_PATTERN = f"^{ID_PATTERN}$"
PARAMS_MAX_BYTES = 8192


class Category(StrEnum):
    RESTAURANT = "restaurant"
    CANTEEN = "canteen"
    COLD_STORE = "cold_store"
    ELEVATOR_SITE = "elevator_site"
    OTHER = "other"


# What people write in a spreadsheet's category column, besides the values themselves.
CATEGORY_LABELS: dict[str, Category] = {
    "餐饮": Category.RESTAURANT, "餐馆": Category.RESTAURANT, "饭店": Category.RESTAURANT,
    "餐厅": Category.RESTAURANT, "食堂": Category.CANTEEN, "冷库": Category.COLD_STORE,
    "电梯": Category.ELEVATOR_SITE, "其他": Category.OTHER, "其它": Category.OTHER,
}


def _category(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        return CATEGORY_LABELS.get(text, text.lower())
    return value


# --- 统一社会信用代码 (unified social credit code, GB 32100-2015) -------------------------

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_USCC_SHAPE = re.compile(r"^[0-9A-Za-z]{18}$")
LICENCE_MAX = 64


def uscc_check_char(first17: str) -> str:
    """The 18th character of a code that starts with these 17."""
    total = sum(USCC_ALPHABET.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def uscc_problem(code: str) -> str | None:
    """Why an 18-character code is no 统一社会信用代码, or None when it is one."""
    bad = sorted({c for c in code if c not in USCC_ALPHABET})
    if bad:
        return f"characters {''.join(bad)!r} cannot appear in a 统一社会信用代码"
    expected = uscc_check_char(code[:17])
    if code[17] != expected:
        return f"check character is {code[17]!r}, expected {expected!r} (a typo?)"
    return None


def _licence(value: str | None) -> str | None:
    """Free text (a 许可证号), except that 18 letters and digits must be a valid
    统一社会信用代码 (kept upper-case)."""
    if value is None or not value:
        return None
    if _USCC_SHAPE.match(value):
        code = value.upper()
        problem = uscc_problem(code)
        if problem:
            raise ValueError(f"not a valid 统一社会信用代码: {problem}")
        return code
    return value


def _params(value: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > PARAMS_MAX_BYTES:
        raise ValueError(f"params take {size} bytes as JSON, at most {PARAMS_MAX_BYTES}")
    if any(not key for key in value):
        raise ValueError("params keys cannot be empty")
    return value


def checked_params(device_class: DeviceClass | str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as the device class's rules take them (:mod:`ganzhi.device_params`),
    normalised; ValueError naming the key otherwise."""
    return device_params.dump(device_params.validate(device_class, params))


def incomplete(device_class: str, params: dict[str, Any]) -> list[str]:
    """What the class's rules need and ``params`` lacks; stored params that are no longer
    valid (set before a rule changed) are reported as such."""
    try:
        return device_params.missing(device_class, params)
    except ValueError as exc:
        return [f"params: {exc}"]


JurisdictionId = Annotated[str, StringConstraints(pattern=JURISDICTION_ID_PATTERN)]
SiteId = Annotated[str, StringConstraints(pattern=SITE_ID_PATTERN)]
DeviceId = SiteId
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Level = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]
Address = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
Licence = Annotated[
    Annotated[str, StringConstraints(strip_whitespace=True, max_length=LICENCE_MAX)] | None,
    AfterValidator(_licence),
]
Phone = Annotated[str, StringConstraints(strip_whitespace=True,
                                         pattern=r"^\+?[0-9][0-9 -]{2,30}$")]
CategoryIn = Annotated[Category, BeforeValidator(_category)]
Params = Annotated[dict[str, Any], AfterValidator(_params)]


def _nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_nul(k) or _nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_nul(v) for v in value)
    return False


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if _nul(data):
            raise ValueError("text cannot contain NUL characters")
        return data


class _Patch(_In):
    """A change: only the fields given are changed; ``null`` only where it means
    something (an optional field emptied)."""

    REQUIRED: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _no_null_for_required(self) -> _Patch:
        for name in sorted(self.model_fields_set & self.REQUIRED):
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(mode="json", include=self.model_fields_set)


# --- jurisdictions ---------------------------------------------------------------------


class JurisdictionIn(_In):
    id: JurisdictionId
    name: Name
    level: Level = Field(description="city, district, station...: for display")
    parent_id: JurisdictionId | None = Field(default=None, description="None: a root node")


class JurisdictionPatch(_Patch):
    REQUIRED = frozenset({"name", "level"})

    name: Name | None = None
    level: Level | None = None
    parent_id: JurisdictionId | None = Field(
        default=None, description="Move the node (and its subtree) here; null: a root")


class JurisdictionOut(BaseModel):
    id: str
    parent_id: str | None
    name: str
    level: str
    path: str
    created_at: datetime
    updated_at: datetime


# --- sites --------------------------------------------------------------------------


class SiteIn(_In):
    id: SiteId
    jurisdiction_id: JurisdictionId
    name: Name
    category: CategoryIn
    address: Address = ""
    licence_no: Licence = None
    contact_name: Text | None = None
    contact_phone: Phone | None = None


SITE_FIELDS = ("jurisdiction_id", "name", "category", "address", "licence_no",
               "contact_name", "contact_phone")


class SitePatch(_Patch):
    REQUIRED = frozenset({"jurisdiction_id", "name", "category", "address"})

    jurisdiction_id: JurisdictionId | None = None
    name: Name | None = None
    category: CategoryIn | None = None
    address: Address | None = None
    licence_no: Licence = None
    contact_name: Text | None = None
    contact_phone: Phone | None = None


class SiteOut(BaseModel):
    id: str
    jurisdiction_id: str
    jurisdiction_path: str
    name: str
    category: str
    address: str
    licence_no: str | None
    contact_name: str | None
    contact_phone: str | None
    created_at: datetime
    updated_at: datetime


class SitePage(BaseModel):
    items: list[SiteOut]
    next_after: str | None = Field(description="Pass as ``after`` for the next page")


# --- devices ------------------------------------------------------------------------


class DeviceIn(_In):
    device_id: DeviceId
    device_class: DeviceClass
    model: Text | None = None
    location: Text | None = None
    firmware: Text | None = None
    params: Params = Field(default_factory=dict, description="What the device's rules need")

    @model_validator(mode="after")
    def _params_of_class(self) -> DeviceIn:
        self.params = checked_params(self.device_class, self.params)
        return self


DEVICE_FIELDS = ("device_class", "model", "location", "firmware", "params")


class DevicePatch(_Patch):
    """Params and class are checked together, with the stored ones, by the store."""

    REQUIRED = frozenset({"device_class", "params"})

    device_class: DeviceClass | None = None
    model: Text | None = None
    location: Text | None = None
    firmware: Text | None = None
    params: Params | None = None


DeviceStatus = Literal["online", "offline", "unknown"]


class DeviceOut(BaseModel):
    site_id: str
    device_id: str
    device_class: str
    model: str | None
    location: str | None
    firmware: str | None
    params: dict[str, Any]
    status: DeviceStatus = Field(
        description="offline: a device.offline alert is open, or nothing heard for longer"
        " than its report period allows; unknown: never heard from")
    last_seen: datetime | None = Field(
        description="Latest of its readings, its alert events and its last report")
    incomplete: list[str] = Field(
        description="Params its rules need that it lacks: its rules cannot run yet")
    provisioned: bool = Field(description="Holds live MQTT credentials")
    created_at: datetime
    updated_at: datetime
