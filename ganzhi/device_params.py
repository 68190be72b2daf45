"""What a device's registration carries for its rules, per device class (pure, no I/O).

The registry keeps these in ``devices.params`` (jsonb); the stream worker reads them as a
layer of its rules model (``stream/rules/model.py``, docs/rules.md "Device parameters from
the registry"); an edge box file may declare the same mapping per device (``params:``), for
the registry to import. One model per :class:`~ganzhi.contracts.DeviceClass`:

* ``cold_store``: ``variant`` (``chilled`` 0..8 °C, ``frozen`` at or below -18 °C, GB/T
  24616; ``other``: neither, its band given by ``high_limit_c`` / ``low_limit_c``),
  optional ``set_point_c`` (the controller's, for display and a consistency check) and
  optional limits ``high_limit_c`` (temperature_high), ``low_limit_c`` (temperature_low,
  freezing risk) and ``rebound_limit_c`` (frozen_rebound, DB31/T 388 -15 °C).
* ``elevator``: ``rated_speed_mps`` (overspeed), ``top_landing_m`` (the top landing's
  ``position_m`` above the lowest one: overtravel_top), optional ``bottom_landing_m``
  (0), ``landings`` (count) and ``lowest_floor`` (the floor number of the lowest
  landing, e.g. -2), both for display.
* ``kitchen_camera``: optional ``scenarios``, the violations watched (default: the
  detector model's own list, configured on the edge).

:func:`validate` refuses a wrong mapping with a reason naming the key; :func:`missing`
lists what the class's rules need and the mapping lacks (an *incompletely configured*
device: its rules that need the parameter are not run on a guessed default).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ganzhi.contracts import DeviceClass, Violation

ColdVariant = Literal["chilled", "frozen", "other"]

# GB/T 24616: chilled goods 0..8 °C, frozen goods at or below -18 °C.
CHILLED_RANGE_C = (0.0, 8.0)
FROZEN_MAX_C = -18.0


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans(cls, data: Any) -> Any:
        # No parameter is a flag: true for a speed is a mistake, not 1.0.
        if isinstance(data, Mapping):
            for key, value in data.items():
                if isinstance(value, bool):
                    raise ValueError(f"{key}: expected a number or a name, got {value!r}")
        return data


class ColdStoreParams(_Params):
    variant: ColdVariant | None = None
    set_point_c: float | None = Field(default=None, ge=-60, le=60)
    high_limit_c: float | None = Field(default=None, ge=-60, le=60)
    low_limit_c: float | None = Field(default=None, ge=-60, le=60)
    rebound_limit_c: float | None = Field(default=None, ge=-60, le=60)

    @model_validator(mode="after")
    def _consistent(self) -> ColdStoreParams:
        lo, hi, sp = self.low_limit_c, self.high_limit_c, self.set_point_c
        if lo is not None and hi is not None and lo >= hi:
            raise ValueError(f"low_limit_c ({lo}) must be below high_limit_c ({hi})")
        if sp is not None:
            if hi is not None and sp >= hi:
                raise ValueError(f"set_point_c ({sp}) must be below high_limit_c ({hi})")
            if lo is not None and sp <= lo:
                raise ValueError(f"set_point_c ({sp}) must be above low_limit_c ({lo})")
            if self.variant == "chilled" and not CHILLED_RANGE_C[0] < sp <= CHILLED_RANGE_C[1]:
                raise ValueError(f"set_point_c ({sp}) is outside the chilled band "
                                 f"{CHILLED_RANGE_C[0]:g}..{CHILLED_RANGE_C[1]:g} °C: "
                                 "variant frozen or other?")
            if self.variant == "frozen" and sp > FROZEN_MAX_C:
                raise ValueError(f"set_point_c ({sp}) is above {FROZEN_MAX_C:g} °C, the "
                                 "frozen limit: variant chilled or other?")
        if self.rebound_limit_c is not None and self.variant not in ("frozen", "other"):
            raise ValueError("rebound_limit_c applies to frozen (or other) rooms only")
        return self


class ElevatorParams(_Params):
    rated_speed_mps: float | None = Field(default=None, gt=0, le=25)
    top_landing_m: float | None = Field(default=None, gt=0, le=1000)
    bottom_landing_m: float | None = Field(default=None, ge=-10, le=10)
    landings: int | None = Field(default=None, ge=2, le=300)
    lowest_floor: int | None = Field(default=None, ge=-20, le=300)


class KitchenCameraParams(_Params):
    scenarios: list[Violation] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> KitchenCameraParams:
        if self.scenarios is not None and len(set(self.scenarios)) != len(self.scenarios):
            raise ValueError("scenarios: each violation once")
        return self


DeviceParams = ColdStoreParams | ElevatorParams | KitchenCameraParams

MODELS: dict[DeviceClass, type[DeviceParams]] = {
    DeviceClass.COLD_STORE: ColdStoreParams,
    DeviceClass.ELEVATOR: ElevatorParams,
    DeviceClass.KITCHEN_CAMERA: KitchenCameraParams,
}

# What each class's rules need (docs/rules.md): shown by missing().
REQUIRED: dict[DeviceClass, tuple[str, ...]] = {
    DeviceClass.COLD_STORE: ("variant",),  # + high_limit_c when variant is other
    DeviceClass.ELEVATOR: ("rated_speed_mps", "top_landing_m"),
    DeviceClass.KITCHEN_CAMERA: (),
}


def device_class_of(value: DeviceClass | str) -> DeviceClass:
    try:
        return DeviceClass(value)
    except ValueError:
        known = [c.value for c in DeviceClass]
        raise ValueError(f"device_class: unknown {value!r} (known: {known})") from None


def _reason(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def validate(device_class: DeviceClass | str, params: Mapping[str, Any] | None
             ) -> DeviceParams:
    """``params`` as the class's model; ValueError with the reason, naming the key
    (``rated_speed_mps: Input should be greater than 0``)."""
    cls = device_class_of(device_class)
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ValueError(f"params: expected a mapping, got {type(params).__name__}")
    try:
        return MODELS[cls].model_validate(dict(params))
    except ValidationError as exc:
        raise ValueError(_reason(exc)) from None


def missing_of(model: DeviceParams) -> list[str]:
    """The parameters the class's rules need that ``model`` lacks."""
    if isinstance(model, ColdStoreParams):
        if model.variant is None:
            return ["variant"]
        if model.variant == "other" and model.high_limit_c is None:
            return ["high_limit_c"]
        return []
    if isinstance(model, ElevatorParams):
        return [k for k in REQUIRED[DeviceClass.ELEVATOR] if getattr(model, k) is None]
    return []


def missing(device_class: DeviceClass | str, params: Mapping[str, Any] | None) -> list[str]:
    """What the class's rules need and ``params`` does not have (``[]``: complete).
    Raises ValueError like :func:`validate` when ``params`` is not valid at all.

    This looks at the registry's mapping alone; the stream worker also counts what a
    rules file or the ``rule_config`` table sets for the device (its
    ``device.incomplete_config`` alert is the final word)."""
    return missing_of(validate(device_class, params))


def dump(model: DeviceParams) -> dict[str, Any]:
    """The mapping to store (unset keys left out)."""
    return model.model_dump(mode="json", exclude_none=True)
