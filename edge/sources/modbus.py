"""Modbus TCP devices read through a register map (pymodbus).

Each map entry says where a value lives (``kind``: holding / input register, coil,
discrete input; ``address``), how to decode it (``type``, ``word_order``) and how to turn
it into a reading (``scale``, ``offset``, ``unit``, ``metric``). Entries of one kind with
adjacent or overlapping addresses are read in one request (at most 125 registers or
2000 bits). A failed read raises :class:`SourceError` with a reason:

* ``modbus_unreachable``: no TCP connection (refused, host down, connection lost);
* ``modbus_timeout``: connected, but the device did not answer in ``timeout_s``;
* ``modbus_exception``: the device answered with a Modbus exception (illegal address...).

The client is closed on a transport failure and reconnects on the next read.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from edge.sources.base import MetricValue, SourceError, SourceSample
from edge.sources.edges import METRIC_PATTERN, EdgeEvent, edge_events

__all__ = [
    "EdgeEvent", "ModbusSource", "ModbusSourceConfig", "RegType", "RegisterKind",
    "RegisterMap", "decode", "edge_events", "encode", "plan_reads",
]

MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000


class RegisterKind(StrEnum):
    HOLDING = "holding"
    INPUT = "input"
    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"

    @property
    def is_bit(self) -> bool:
        return self in (RegisterKind.COIL, RegisterKind.DISCRETE_INPUT)


Table = RegisterKind  # the name used before ``kind``


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
    """One reading: where it lives, how it is encoded, what it means.

    ``kind`` is also accepted as ``table`` (the older name). On coils and discrete inputs
    only ``type: bool`` makes sense; a ``bool`` on a register is "non-zero".
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    metric: str = Field(pattern=METRIC_PATTERN)
    address: int = Field(ge=0, le=65535)
    kind: RegisterKind = Field(
        default=RegisterKind.HOLDING, validation_alias=AliasChoices("kind", "table"))
    type: RegType = RegType.UINT16
    word_order: Literal["big", "little"] = "big"  # of the two words of a 32-bit value
    scale: float = 1.0  # value = raw * scale + offset
    offset: float = 0.0
    unit: str = Field(default="", max_length=16)

    @property
    def count(self) -> int:
        """Registers (or bits) this entry occupies."""
        return 1 if self.kind.is_bit else _WORDS[self.type]

    @property
    def words(self) -> int:
        return _WORDS[self.type]

    @model_validator(mode="after")
    def _bits_are_bool(self) -> RegisterMap:
        if self.kind.is_bit and self.type is not RegType.BOOL:
            raise ValueError(f"a {self.kind.value} holds one bit: type must be bool")
        return self


class ModbusSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["modbus"]
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)
    timeout_s: float = Field(default=1.0, gt=0)
    retries: int = Field(default=0, ge=0, le=5, description="Re-sends within one read.")
    registers: list[RegisterMap] = Field(min_length=1)
    events: list[EdgeEvent] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_metrics(self) -> ModbusSourceConfig:
        seen: set[str] = set()
        for r in self.registers:
            if r.metric in seen:
                raise ValueError(f"metric {r.metric!r} is mapped twice")
            seen.add(r.metric)
        return self


# --- pure decoding -----------------------------------------------------------------


def decode(words: Sequence[int], reg: RegisterMap) -> float:
    """Raw 16-bit words (or one bit as 0/1) to the reading's value. Pure."""
    if len(words) != reg.words:
        raise ValueError(f"{reg.metric}: need {reg.words} words, got {len(words)}")
    if reg.type is RegType.BOOL:
        return 1.0 if words[0] else 0.0
    ws = list(words) if reg.word_order == "big" else list(reversed(words))
    raw = 0
    for w in ws:
        raw = (raw << 16) | (w & 0xFFFF)
    value: float
    if reg.type is RegType.INT16:
        value = raw - 0x10000 if raw & 0x8000 else raw
    elif reg.type is RegType.INT32:
        value = raw - 0x1_0000_0000 if raw & 0x8000_0000 else raw
    elif reg.type is RegType.FLOAT32:
        value = struct.unpack(">f", raw.to_bytes(4, "big"))[0]
    else:
        value = raw
    return value * reg.scale + reg.offset


def encode(value: float, reg: RegisterMap) -> list[int]:
    """The inverse of :func:`decode`: a reading to the words a device would hold. Pure.

    Integer types round to the nearest step and saturate at the type's range (a real
    device clamps too). Used by the virtual device server and the tests.
    """
    if reg.type is RegType.BOOL:
        return [1 if value else 0]
    raw_f = (value - reg.offset) / reg.scale if reg.scale else 0.0
    if reg.type is RegType.FLOAT32:
        hi, lo = struct.unpack(">HH", struct.pack(">f", raw_f))
        ws = [hi, lo]
    else:
        lo_lim, hi_lim = {
            RegType.UINT16: (0, 0xFFFF), RegType.INT16: (-0x8000, 0x7FFF),
            RegType.UINT32: (0, 0xFFFF_FFFF), RegType.INT32: (-0x8000_0000, 0x7FFF_FFFF),
        }[reg.type]
        raw = max(lo_lim, min(hi_lim, round(raw_f)))
        if reg.words == 1:
            ws = [raw & 0xFFFF]
        else:
            raw &= 0xFFFF_FFFF
            ws = [raw >> 16, raw & 0xFFFF]
    return ws if reg.word_order == "big" else list(reversed(ws))


@dataclass(frozen=True)
class ReadBlock:
    """One request: ``count`` registers (or bits) of one kind from ``address``."""

    kind: RegisterKind
    address: int
    count: int
    entries: tuple[RegisterMap, ...]


def plan_reads(registers: Sequence[RegisterMap]) -> list[ReadBlock]:
    """Group entries of one kind whose addresses touch or overlap into requests. Pure."""
    blocks: list[ReadBlock] = []
    for kind in RegisterKind:
        entries = sorted((r for r in registers if r.kind is kind), key=lambda r: r.address)
        limit = MAX_BITS_PER_READ if kind.is_bit else MAX_REGISTERS_PER_READ
        run: list[RegisterMap] = []
        start = end = 0
        for r in entries:
            r_end = r.address + r.count
            if run and r.address <= end and max(end, r_end) - start <= limit:
                run.append(r)
                end = max(end, r_end)
                continue
            if run:
                blocks.append(ReadBlock(kind, start, end - start, tuple(run)))
            run, start, end = [r], r.address, r_end
        if run:
            blocks.append(ReadBlock(kind, start, end - start, tuple(run)))
    return blocks


def decode_block(block: ReadBlock, data: Sequence[int]) -> dict[str, MetricValue]:
    """The readings in one request's response (registers, or bits as 0/1). Pure."""
    out: dict[str, MetricValue] = {}
    for r in block.entries:
        i = r.address - block.address
        out[r.metric] = MetricValue(r.metric, decode(data[i:i + r.count], r), r.unit)
    return out


# --- the source -------------------------------------------------------------------


class ModbusSource:
    """A :class:`~edge.sources.base.DeviceSource` reading one Modbus TCP unit."""

    def __init__(self, cfg: ModbusSourceConfig) -> None:
        self.cfg = cfg
        self._blocks = plan_reads(cfg.registers)
        self._client = self._new_client()
        self._last: dict[str, float] = {}

    def _new_client(self) -> AsyncModbusTcpClient:
        return AsyncModbusTcpClient(
            self.cfg.host, port=self.cfg.port, timeout=self.cfg.timeout_s,
            retries=self.cfg.retries,
            reconnect_delay=0,  # no background reconnects: the next read reconnects
        )

    async def open(self) -> None:
        return None  # connecting is part of every read, so a device down at boot is fine

    async def _connect(self) -> None:
        if self._client.connected:
            return
        self._client.close()
        self._client = self._new_client()
        try:
            ok = await asyncio.wait_for(self._client.connect(), self.cfg.timeout_s * 2)
        except (TimeoutError, OSError) as exc:
            self._client.close()
            raise SourceError("modbus_unreachable",
                              f"{self.cfg.host}:{self.cfg.port}: {exc!r}") from None
        if not ok:
            self._client.close()
            raise SourceError("modbus_unreachable", f"{self.cfg.host}:{self.cfg.port}")

    async def _read_block(self, b: ReadBlock) -> list[int]:
        c, unit = self._client, self.cfg.unit_id
        if b.kind is RegisterKind.HOLDING:
            resp = await c.read_holding_registers(b.address, count=b.count, device_id=unit)
        elif b.kind is RegisterKind.INPUT:
            resp = await c.read_input_registers(b.address, count=b.count, device_id=unit)
        elif b.kind is RegisterKind.COIL:
            resp = await c.read_coils(b.address, count=b.count, device_id=unit)
        else:
            resp = await c.read_discrete_inputs(b.address, count=b.count, device_id=unit)
        if resp.isError():
            raise SourceError("modbus_exception",
                              f"{b.kind.value}@{b.address}+{b.count}: {resp}")
        if b.kind.is_bit:
            bits = list(resp.bits)
            if len(bits) < b.count:
                raise SourceError("modbus_exception", f"short response at {b.address}")
            return [1 if x else 0 for x in bits[:b.count]]
        regs = list(resp.registers)
        if len(regs) < b.count:
            raise SourceError("modbus_exception", f"short response at {b.address}")
        return regs

    async def read(self) -> SourceSample:
        await self._connect()
        values: dict[str, MetricValue] = {}
        try:
            for b in self._blocks:
                values.update(decode_block(b, await self._read_block(b)))
        except ConnectionException as exc:
            self._client.close()
            raise SourceError("modbus_unreachable", str(exc)) from None
        except ModbusIOException as exc:
            self._client.close()
            raise SourceError("modbus_timeout", str(exc)) from None
        except ModbusException as exc:
            self._client.close()
            raise SourceError("modbus_exception", str(exc)) from None
        except (TimeoutError, OSError) as exc:
            self._client.close()
            raise SourceError("modbus_timeout", repr(exc)) from None
        ordered = [values[r.metric] for r in self.cfg.registers if r.metric in values]
        now = {v.metric: v.value for v in ordered}
        events = edge_events(self.cfg.events, self._last, now)
        self._last = now
        return SourceSample(datetime.now(UTC), ordered, events)

    async def close(self) -> None:
        self._client.close()
