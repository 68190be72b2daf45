"""ModbusSource against a real pymodbus TCP server on loopback."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge.sources.base import SourceError
from edge.sources.modbus import ModbusSource, ModbusSourceConfig
from ganzhi.stack.infra import free_port

pytestmark = pytest.mark.integration


def _float_words(x: float) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    return [hi, lo]


def _device(temperature_raw: int, alarm: bool) -> SimDevice:
    holding = [SimData(0, values=[temperature_raw & 0xFFFF, *_float_words(61.5)],
                       datatype=DataType.REGISTERS)]
    coils = [SimData(0, values=[True, False], datatype=DataType.BITS)]
    inputs = [SimData(0, values=[alarm, False], datatype=DataType.BITS)]
    input_regs = [SimData(0, values=[1], datatype=DataType.REGISTERS)]
    return SimDevice(1, simdata=(coils, inputs, holding, input_regs))


async def _serve(port: int, device: SimDevice) -> ModbusTcpServer:
    server = ModbusTcpServer(device, address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    return server


def _config(port: int, timeout_s: float = 0.5) -> ModbusSourceConfig:
    return ModbusSourceConfig.model_validate({
        "type": "modbus", "host": "127.0.0.1", "port": port, "unit_id": 1,
        "timeout_s": timeout_s,
        "registers": [
            {"metric": "temperature", "address": 0, "type": "int16", "scale": 0.1,
             "unit": "celsius"},
            {"metric": "humidity", "address": 1, "type": "float32", "unit": "percent"},
            {"metric": "door_open", "address": 0, "table": "coil", "type": "bool",
             "unit": "bool"},
            {"metric": "alarm_button", "address": 0, "table": "discrete_input", "type": "bool",
             "unit": "bool"},
            {"metric": "power", "address": 0, "table": "input", "unit": "bool"},
        ],
        "events": [{"metric": "alarm_button", "event": "alarm_button_pressed"}],
    })


@pytest.fixture
async def port() -> AsyncIterator[int]:
    yield free_port()


async def test_register_map_decodes_values_and_units(port: int) -> None:
    server = await _serve(port, _device(temperature_raw=-35, alarm=False))
    source = ModbusSource(_config(port))
    try:
        sample = await source.read()
        got = {v.metric: (v.value, v.unit) for v in sample.values}
        assert got["temperature"] == (pytest.approx(-3.5), "celsius")
        assert got["humidity"] == (pytest.approx(61.5), "percent")
        assert got["door_open"] == (1.0, "bool")
        assert got["alarm_button"] == (0.0, "bool")
        assert got["power"] == (1.0, "bool")
        assert sample.events == []
    finally:
        await source.close()
        await server.shutdown()
    # The alarm button is pressed on the device: an edge event on the next read.
    server = await _serve(port, _device(temperature_raw=-35, alarm=True))
    try:
        pressed = await source.read()
        assert [e.event for e in pressed.events] == ["alarm_button_pressed"]
    finally:
        await source.close()
        await server.shutdown()


async def test_unreachable_and_silent_devices_are_errors_not_crashes(port: int) -> None:
    source = ModbusSource(_config(port, timeout_s=0.3))
    with pytest.raises(SourceError) as err:
        await source.read()
    assert err.value.reason == "modbus_unreachable"

    # A device that accepts the connection and never answers: a timeout.
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

    # The device comes back: the same source reads again.
    server = await _serve(port, _device(temperature_raw=42, alarm=False))
    try:
        sample = await source.read()
        assert {v.metric: v.value for v in sample.values}["temperature"] == pytest.approx(4.2)
    finally:
        await source.close()
        await server.shutdown()
