"""ganzhi.device_params: what registration carries per device class, validation, missing."""

from __future__ import annotations

from typing import Any

import pytest

from ganzhi import device_params as dp
from ganzhi.contracts import DeviceClass, Violation


@pytest.mark.parametrize(("cls", "params", "model"), [
    ("cold_store", {"variant": "frozen", "set_point_c": -20}, dp.ColdStoreParams),
    ("cold_store", {"variant": "chilled", "set_point_c": 3, "high_limit_c": 6}, dp.ColdStoreParams),
    ("cold_store", {"variant": "other", "high_limit_c": 15, "low_limit_c": 10},
     dp.ColdStoreParams),
    ("elevator", {"rated_speed_mps": 1.75, "top_landing_m": 54, "landings": 19,
                  "lowest_floor": -1}, dp.ElevatorParams),
    (DeviceClass.KITCHEN_CAMERA, {"scenarios": ["no_mask", "smoking"]}, dp.KitchenCameraParams),
    ("kitchen_camera", None, dp.KitchenCameraParams),
])
def test_valid_params(cls: str, params: dict[str, Any] | None, model: type[Any]) -> None:
    got = dp.validate(cls, params)
    assert isinstance(got, model)
    assert dp.validate(cls, dp.dump(got)) == got  # what is stored reads back the same


def test_camera_scenarios_are_violations() -> None:
    got = dp.validate("kitchen_camera", {"scenarios": ["no_mask"]})
    assert isinstance(got, dp.KitchenCameraParams) and got.scenarios == [Violation.NO_MASK]


@pytest.mark.parametrize(("cls", "params", "reason"), [
    ("cold_store", {"variant": "warm"}, r"^variant: Input should be 'chilled', 'frozen'"),
    ("cold_store", {"variant": "chilled", "setpoint": 3}, r"^setpoint: Extra inputs"),
    ("cold_store", {"variant": "chilled", "set_point_c": -20}, r"set_point_c .* chilled band"),
    ("cold_store", {"variant": "frozen", "set_point_c": -5}, r"set_point_c .* frozen limit"),
    ("cold_store", {"low_limit_c": 5, "high_limit_c": 2}, r"low_limit_c .* below high_limit_c"),
    ("cold_store", {"variant": "chilled", "rebound_limit_c": -15}, r"rebound_limit_c"),
    ("cold_store", {"set_point_c": "cold"}, r"^set_point_c: "),
    ("elevator", {"rated_speed_mps": 0}, r"^rated_speed_mps: Input should be greater than 0"),
    ("elevator", {"landings": 1}, r"^landings: "),
    ("elevator", {"rated_speed_mps": True}, r"^rated_speed_mps: "),
    ("kitchen_camera", {"scenarios": ["dancing"]}, r"^scenarios\.0: "),
    ("kitchen_camera", {"scenarios": ["no_mask", "no_mask"]}, r"scenarios: each violation once"),
    ("kitchen_camera", {"scenarios": []}, r"^scenarios: "),
    ("gateway", {}, r"^device_class: unknown 'gateway'"),
    ("elevator", [1, 2], r"^params: expected a mapping"),
])
def test_invalid_params_name_the_key(cls: str, params: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        dp.validate(cls, params)


@pytest.mark.parametrize(("cls", "params", "missing"), [
    ("cold_store", {}, ["variant"]),
    ("cold_store", {"set_point_c": -20}, ["variant"]),
    ("cold_store", {"variant": "chilled"}, []),
    ("cold_store", {"variant": "frozen"}, []),
    ("cold_store", {"variant": "other"}, ["high_limit_c"]),
    ("cold_store", {"variant": "other", "high_limit_c": 12}, []),
    ("elevator", {}, ["rated_speed_mps", "top_landing_m"]),
    ("elevator", {"rated_speed_mps": 1.75, "landings": 19}, ["top_landing_m"]),
    ("elevator", {"rated_speed_mps": 1.75, "top_landing_m": 54}, []),
    ("kitchen_camera", {}, []),
])
def test_missing(cls: str, params: dict[str, Any], missing: list[str]) -> None:
    assert dp.missing(cls, params) == missing


def test_missing_refuses_invalid_params() -> None:
    with pytest.raises(ValueError, match="variant"):
        dp.missing("cold_store", {"variant": "warm"})
