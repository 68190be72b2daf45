"""Modbus TCP devices read through a register map (pymodbus).

Each map entry says where a value lives (table and address), how to decode it (type,
word order) and how to turn it into a reading (scale, offset, unit, metric). A failed
read raises :class:`SourceError` with a reason (``modbus_timeout``,
``modbus_unreachable``, ``modbus_exception``); the client reconnects on the next read.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException

from edge.sources.base import MetricValue, SourceError, SourceEvent, SourceSample
from ganzhi.contracts import Severity


class Table(StrEnum):
    HOLDING = "holding"
    INPUT = "input"
    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"


class RegType(StrEnum):
    UINT16 = "uint16"
    INT16 = "int16"
    UINT32 = "uint32"
    INT32 = "int32"
    FLOAT32 = "float32"
    BOOL = "bool"


_WORDS = {RegType.UINT16: 1, RegType.INT16: 1, RegType.UINT32: 2, RegType.INT32: 2,
          RegType.FLOAT32: 2, RegType.BOOL: 1}


class RegisterMap(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str = Field(pattern=r"^[a-z][a-z0-9_.]{0,63}$")
    address: int = Field(ge=0, le=65535)
    table: Table = Table.HOLDING
    type: RegType = RegType.UINT16
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""

    @property
    def words(self) -> int:
        return _WORDS[self.type]


class EdgeEvent(BaseModel):
    """Raise a device event when a metric changes in a given way (alarm button pressed)."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    when: Literal["rising", "falling"] = "rising"
    event: str = Field(pattern=r"^[a-z][a-z0-9_.]{0,63}$")
    severity: Severity = Severity.MAJOR


class ModbusSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["modbus"]
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)
    timeout_s: float = Field(default=1.0, gt=0)
    registers: list[RegisterMap] = Field(min_length=1)
    events: list[EdgeEvent] = Field(default_factory=list)


def decode(words: list[int], reg: RegisterMap) -> float:
    """Raw 16-bit words (or bits as 0/1) to the reading's value. Pure."""
    if len(words) != reg.words:
        raise ValueError(f"{reg.metric}: need {reg.words} words, got {len(words)}")
    if reg.type is RegType.BOOL:
        return 1.0 if words[0] else 0.0
    ws = words if reg.word_order == "big" else list(reversed(words))
    raw = 0
    for w in ws:
        raw = (raw << 16) | (w & 0xFFFF)
    value: float
    if reg.type is RegType.INT16:
        value = raw - 0x10000 if raw & 0x8000 else raw
    elif reg.type is RegType.INT32:
        value = raw - 0x1_0000_0000 if raw & 0x8000_0000 else raw
    elif reg.type is RegType.FLOAT32:
        import struct

        value = struct.unpack(">f", raw.to_bytes(4, "big"))[0]
    else:
        value = raw
    return value * reg.scale + reg.offset


def edge_events(
    rules: list[EdgeEvent], before: dict[str, float], now: dict[str, float]
) -> list[SourceEvent]:
    """Events for metrics that rose from 0 or fell to 0 since the last read. Pure."""
    out = []
    for rule in rules:
        if rule.metric not in before or rule.metric not in now:
            continue
        was, is_ = bool(before[rule.metric]), bool(now[rule.metric])
        if (rule.when == "rising" and is_ and not was) or (
            rule.when == "falling" and was and not is_
        ):
            out.append(SourceEvent(rule.event, rule.severity, {"metric": rule.metric}))
    return out


class ModbusSource:
    def __init__(self, cfg: ModbusSourceConfig) -> None:
        self.cfg = cfg
        self._client = AsyncModbusTcpClient(
            cfg.host, port=cfg.port, timeout=cfg.timeout_s, retries=0,
            reconnect_delay=0,  # this source reconnects on the next read itself
        )
        self._last: dict[str, float] = {}

    async def open(self) -> None:
        return None

    async def _connect(self) -> None:
        if self._client.connected:
            return
        try:
            ok = await asyncio.wait_for(self._client.connect(), self.cfg.timeout_s * 2)
        except (TimeoutError, OSError) as exc:
            raise SourceError("modbus_unreachable", str(exc)) from None
        if not ok:
            raise SourceError("modbus_unreachable", f"{self.cfg.host}:{self.cfg.port}")

    async def _read_words(self, reg: RegisterMap) -> list[int]:
        c, unit = self._client, self.cfg.unit_id
        if reg.table is Table.HOLDING:
            resp = await c.read_holding_registers(reg.address, count=reg.words, device_id=unit)
        elif reg.table is Table.INPUT:
            resp = await c.read_input_registers(reg.address, count=reg.words, device_id=unit)
        elif reg.table is Table.COIL:
            resp = await c.read_coils(reg.address, count=1, device_id=unit)
        else:
            resp = await c.read_discrete_inputs(reg.address, count=1, device_id=unit)
        if resp.isError():
            raise SourceError("modbus_exception", f"{reg.metric}@{reg.address}: {resp}")
        if reg.table in (Table.COIL, Table.DISCRETE_INPUT):
            return [1 if resp.bits[0] else 0]
        return list(resp.registers)

    async def read(self) -> SourceSample:
        await self._connect()
        values: list[MetricValue] = []
        now: dict[str, float] = {}
        try:
            for reg in self.cfg.registers:
                v = decode(await self._read_words(reg), reg)
                values.append(MetricValue(reg.metric, v, reg.unit))
                now[reg.metric] = v
        except ConnectionException as exc:
            self._client.close()
            reason = "modbus_timeout" if "timeout" in str(exc).lower() else "modbus_unreachable"
            raise SourceError(reason, str(exc)) from None
        except ModbusException as exc:
            self._client.close()
            raise SourceError("modbus_timeout", str(exc)) from None
        events = edge_events(self.cfg.events, self._last, now)
        self._last = now
        return SourceSample(datetime.now(UTC), values, events)

    async def close(self) -> None:
        self._client.close()
