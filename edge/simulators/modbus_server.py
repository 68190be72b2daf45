"""A virtual device: a simulator's current values served as Modbus TCP registers.

The scenario plays in real time (``speed`` × wall clock); at each sample the readings
are encoded through the register map (:func:`edge.sources.modbus.encode`) into the
server's holding / input registers, coils and discrete inputs. An edge agent reads it
over real Modbus TCP exactly like a controller in a machine room.

CLI::

    python -m edge.simulators.modbus_server scenarios/elevator/normal.yaml \
        deploy/edge/elevator.yaml --port 5020

(the map file is either a list of register entries, ``{registers: [...]}``, or an agent
config whose first Modbus device's ``registers`` are used.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge.simulators.scenario import iter_samples, load_scenario
from edge.sources.base import MetricValue
from edge.sources.modbus import RegisterKind, RegisterMap, encode

_FC = {RegisterKind.HOLDING: 16, RegisterKind.INPUT: 4, RegisterKind.COIL: 15,
       RegisterKind.DISCRETE_INPUT: 2}


class VirtualDevice:
    """A pymodbus TCP server holding one unit's registers, written through a map."""

    def __init__(self, register_map: Sequence[RegisterMap], host: str, port: int,
                 unit_id: int = 1) -> None:
        self.map = list(register_map)
        self.unit_id = unit_id
        size = {k: 16 for k in RegisterKind}
        for r in self.map:
            size[r.kind] = max(size[r.kind], r.address + r.count + 1)
        for k in (RegisterKind.COIL, RegisterKind.DISCRETE_INPUT):
            size[k] = (size[k] + 15) // 16 * 16

        def bits(k: RegisterKind) -> list[SimData]:
            return [SimData(0, values=[False] * size[k], datatype=DataType.BITS)]

        def regs(k: RegisterKind) -> list[SimData]:
            return [SimData(0, count=size[k], values=0, datatype=DataType.REGISTERS)]

        device = SimDevice(unit_id, simdata=(
            bits(RegisterKind.COIL), bits(RegisterKind.DISCRETE_INPUT),
            regs(RegisterKind.HOLDING), regs(RegisterKind.INPUT)),
            use_bit_addressing=True)
        self.server = ModbusTcpServer(device, address=(host, port))

    async def start(self) -> None:
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        await self.server.shutdown()  # type: ignore[no-untyped-call]

    async def set_values(self, values: Iterable[MetricValue] | Mapping[str, float]) -> None:
        """Write readings (by metric) into their registers; unmapped metrics are ignored."""
        by_metric = values if isinstance(values, Mapping) else {v.metric: v.value for v in values}
        for r in self.map:
            if r.metric not in by_metric:
                continue
            words = encode(by_metric[r.metric], r)
            data: list[int] | list[bool] = (
                [bool(w) for w in words] if r.kind.is_bit else words)
            await self.server.context.async_setValues(
                self.unit_id, _FC[r.kind], r.address, data)


def load_register_map(path: Path | str) -> list[RegisterMap]:
    """Register entries from a YAML file: a list, ``{registers: [...]}``, or an agent config."""
    data: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, dict) and "devices" in data:
        data = next(d["source"] for d in data["devices"]
                    if d.get("source", {}).get("type") == "modbus")
    if isinstance(data, dict):
        data = data.get("registers", [])
    return TypeAdapter(list[RegisterMap]).validate_python(data)


async def serve_virtual_device(
    scenario_path: Path | str, register_map: Sequence[RegisterMap], host: str, port: int,
    stop_event: asyncio.Event, *, unit_id: int = 1, speed: float = 1.0,
    seed: int | None = None, loop: bool = True, started: asyncio.Event | None = None,
) -> None:
    """Serve the scenario's values until ``stop_event`` is set (looping at its end)."""
    scenario = load_scenario(scenario_path)
    dev = VirtualDevice(register_map, host, port, unit_id)
    await dev.start()
    try:
        first = True
        while not stop_event.is_set():
            t0 = time.monotonic()
            for s in iter_samples(scenario, seed=seed):
                delay = t0 + s.offset_s / speed - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop_event.wait(), delay)
                if stop_event.is_set():
                    return
                await dev.set_values(s.values)
                if first and started is not None:
                    started.set()
                first = False
            if not loop:
                await stop_event.wait()
    finally:
        await dev.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("scenario", type=Path)
    ap.add_argument("register_map", type=Path)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5020)
    ap.add_argument("--unit-id", type=int, default=1)
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)

    async def run() -> None:
        stop = asyncio.Event()
        with contextlib.suppress(NotImplementedError):
            import signal

            lp = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                lp.add_signal_handler(sig, stop.set)
        await serve_virtual_device(args.scenario, load_register_map(args.register_map),
                                   args.host, args.port, stop, unit_id=args.unit_id,
                                   speed=args.speed, seed=args.seed)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
