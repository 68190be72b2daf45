"""A Modbus device that stops answering: a metric and one device event, the agent goes on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from edge.config import DeviceConfig
from edge.sampler import DeviceSampler
from edge.sources.modbus import ModbusSource, ModbusSourceConfig
from edge.spool import Spool
from ganzhi.stack.infra import free_port

pytestmark = pytest.mark.integration


def _errors(device: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "ganzhi_edge_source_errors_total", {"device": device, "reason": reason}
    )
    return value or 0.0


async def test_unreachable_modbus_device_is_counted_and_reported_once(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    src_cfg = ModbusSourceConfig.model_validate({
        "type": "modbus", "host": "127.0.0.1", "port": port, "timeout_s": 0.2,
        "registers": [{"metric": "temperature", "address": 0, "type": "int16"}],
    })
    dev = DeviceConfig.model_validate({
        "device_id": "plc-dead", "device_class": "cold_store", "source": src_cfg.model_dump(),
    })
    spool = Spool(tmp_path / "spool.db")
    sampler = DeviceSampler("site-x", dev, ModbusSource(src_cfg), spool)
    before = _errors("plc-dead", "modbus_unreachable")
    for _ in range(3):
        await sampler.sample_once()  # must not raise
    assert _errors("plc-dead", "modbus_unreachable") - before == 3
    events = [json.loads(m.payload) for m in spool.pending("plc-dead", limit=100)
              if m.topic.endswith("/event")]
    assert [e["event"] for e in events] == ["source_error"]
    assert events[0]["detail"]["reason"] == "modbus_unreachable"
    assert events[0]["site_id"] == "site-x"
