"""ModbusSource against a real pymodbus TCP server on loopback (the virtual device)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from edge.simulators.modbus_server import VirtualDevice, load_register_map, serve_virtual_device
from edge.simulators.scenario import iter_samples, load_scenario
from edge.sources.base import SourceError
from edge.sources.modbus import ModbusSource, ModbusSourceConfig, RegisterMap
from ganzhi.stack.infra import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

COLD_MAP = [
    {"metric": "temperature", "address": 0, "type": "int16", "scale": 0.1, "unit": "celsius"},
    {"metric": "temperature_product", "address": 1, "type": "int16", "scale": 0.1,
     "unit": "celsius"},
    {"metric": "humidity", "address": 2, "type": "float32", "unit": "percent"},
    {"metric": "energy_kwh", "address": 10, "kind": "input", "type": "uint32",
     "word_order": "little", "scale": 0.01, "unit": "kwh"},
    {"metric": "offset_temp", "address": 12, "kind": "input", "type": "int32",
     "scale": 0.001, "offset": -40, "unit": "celsius"},
    {"metric": "door_open", "address": 0, "kind": "coil", "type": "bool", "unit": "bool"},
    {"metric": "compressor_on", "address": 1, "kind": "discrete_input", "type": "bool",
     "unit": "bool"},
    {"metric": "alarm_button", "address": 5, "table": "discrete_input", "type": "bool",
     "unit": "bool"},
]


def _config(port: int, timeout_s: float = 0.5) -> ModbusSourceConfig:
    return ModbusSourceConfig.model_validate({
        "type": "modbus", "host": "127.0.0.1", "port": port, "unit_id": 1,
        "timeout_s": timeout_s, "registers": COLD_MAP,
        "events": [{"metric": "alarm_button", "event": "alarm_button_pressed"},
                   {"metric": "door_open", "when": "falling", "event": "door_closed",
                    "severity": "info"}],
    })


async def _device(port: int) -> VirtualDevice:
    dev = VirtualDevice(_config(port).registers, "127.0.0.1", port)
    await dev.start()
    return dev


async def test_register_map_decodes_values_units_and_edges() -> None:
    port = free_port()
    dev = await _device(port)
    source = ModbusSource(_config(port))
    try:
        await dev.set_values({"temperature": -3.5, "temperature_product": 2.1, "humidity": 61.5,
                              "energy_kwh": 123456.78, "offset_temp": -22.5, "door_open": 1,
                              "compressor_on": 1, "alarm_button": 0})
        sample = await source.read()
        got: dict[str, tuple[object, str]] = {v.metric: (v.value, v.unit) for v in sample.values}
        assert got["temperature"] == (pytest.approx(-3.5), "celsius")
        assert got["temperature_product"] == (pytest.approx(2.1), "celsius")
        assert got["humidity"] == (pytest.approx(61.5), "percent")
        assert got["energy_kwh"] == (pytest.approx(123456.78), "kwh")
        assert got["offset_temp"] == (pytest.approx(-22.5), "celsius")
        assert got["door_open"] == (1.0, "bool")
        assert got["compressor_on"] == (1.0, "bool")
        assert got["alarm_button"] == (0.0, "bool")
        assert [v.metric for v in sample.values] == [r["metric"] for r in COLD_MAP]
        assert sample.events == []
        await dev.set_values({"alarm_button": 1, "door_open": 0})
        pressed = await source.read()
        assert sorted(e.event for e in pressed.events) == ["alarm_button_pressed", "door_closed"]
        assert (await source.read()).events == []  # held, not pressed again
    finally:
        await source.close()
        await dev.stop()


async def test_device_exception_is_a_source_error() -> None:
    port = free_port()
    dev = await _device(port)
    cfg = _config(port).model_copy(update={"registers": [
        RegisterMap(metric="far", address=900)]})
    source = ModbusSource(cfg)
    try:
        with pytest.raises(SourceError) as err:
            await source.read()
        assert err.value.reason == "modbus_exception"
    finally:
        await source.close()
        await dev.stop()


async def test_unreachable_and_silent_devices_are_errors_then_recovery() -> None:
    port = free_port()
    source = ModbusSource(_config(port, timeout_s=0.3))
    with pytest.raises(SourceError) as err:
        await source.read()
    assert err.value.reason == "modbus_unreachable"

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    mute = await asyncio.start_server(silent, "127.0.0.1", port)
    try:
        with pytest.raises(SourceError) as err:
            await asyncio.wait_for(source.read(), 10)
        assert err.value.reason == "modbus_timeout"
    finally:
        mute.close()
        await source.close()

    dev = await _device(port)  # the device comes back: the same source reads again
    try:
        await dev.set_values({"temperature": 4.2})
        sample = await source.read()
        assert {v.metric: v.value for v in sample.values}["temperature"] == pytest.approx(4.2)
        await dev.stop()  # and goes away again mid-life
        with pytest.raises(SourceError) as err:
            await source.read()
        assert err.value.reason in ("modbus_unreachable", "modbus_timeout")
        dev = await _device(port)
        await dev.set_values({"temperature": 5.0})
        sample = await source.read()
        assert {v.metric: v.value for v in sample.values}["temperature"] == pytest.approx(5.0)
    finally:
        await source.close()
        await dev.stop()


async def test_virtual_elevator_serves_a_scenario_over_modbus() -> None:
    """The deploy elevator map, a scenario served as a virtual device, read back."""
    port = free_port()
    agent_cfg = yaml.safe_load((ROOT / "deploy/edge/elevator.yaml").read_text())
    src = agent_cfg["devices"][0]["source"] | {"host": "127.0.0.1", "port": port}
    cfg = ModbusSourceConfig.model_validate(src)
    scenario = ROOT / "scenarios/elevator/trapped-at-level.yaml"
    first = next(iter_samples(load_scenario(scenario)))
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve_virtual_device(
        scenario, load_register_map(ROOT / "deploy/edge/elevator.yaml"), "127.0.0.1", port,
        stop, speed=0.001, started=started))  # slowed down: stays at the first sample
    source = ModbusSource(cfg)
    try:
        await asyncio.wait_for(started.wait(), 5)
        sample = await source.read()
        got = {v.metric: v.value for v in sample.values}
        want = {v.metric: v.value for v in first.values}
        for metric in ("floor", "direction", "door_state", "occupancy", "door_zone",
                       "at_level", "power", "safety_circuit_closed", "alarm_button"):
            assert got[metric] == want[metric], metric
        assert got["speed"] == pytest.approx(want["speed"], abs=0.01)
    finally:
        await source.close()
        stop.set()
        await asyncio.wait_for(task, 5)
