"""Edge agent logic without I/O: register decoding, edge events, reporting, backoff, config."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.config import ConfigError, DeviceConfig, load_config
from edge.sampler import ReportState, choose_readings
from edge.sources.base import MetricValue, SourceSample
from edge.sources.modbus import EdgeEvent, RegisterMap, decode, edge_events


@pytest.mark.parametrize(
    ("words", "reg", "expected"),
    [
        ([42], {"type": "uint16"}, 42),
        ([0xFFFE], {"type": "int16"}, -2),
        ([0xFFFE], {"type": "int16", "scale": 0.1}, -0.2),
        ([0x0001, 0x0000], {"type": "uint32"}, 65536),
        ([0x0000, 0x0001], {"type": "uint32", "word_order": "little"}, 65536),
        ([0xFFFF, 0xFFFF], {"type": "int32"}, -1),
        ([0x4148, 0x0000], {"type": "float32"}, 12.5),  # IEEE 754 12.5
        ([0x0000, 0x4148], {"type": "float32", "word_order": "little"}, 12.5),
        ([1], {"type": "bool"}, 1.0),
        ([215], {"type": "int16", "scale": 0.1, "offset": -20}, 1.5),
    ],
)
def test_decode(words: list[int], reg: dict[str, object], expected: float) -> None:
    m = RegisterMap.model_validate({"metric": "x", "address": 0, **reg})
    assert decode(words, m) == pytest.approx(expected)


def test_decode_refuses_wrong_word_count() -> None:
    with pytest.raises(ValueError, match="need 2 words"):
        decode([1], RegisterMap(metric="x", address=0, type="float32"))  # type: ignore[arg-type]


def test_edge_events_on_rising_and_falling() -> None:
    rules = [EdgeEvent(metric="alarm_button", event="alarm_button_pressed"),
             EdgeEvent(metric="power", when="falling", event="power_lost")]
    assert edge_events(rules, {}, {"alarm_button": 1, "power": 0}) == []  # no history yet
    got = edge_events(rules, {"alarm_button": 0, "power": 1}, {"alarm_button": 1, "power": 0})
    assert [e.event for e in got] == ["alarm_button_pressed", "power_lost"]
    assert edge_events(rules, {"alarm_button": 1, "power": 0},
                       {"alarm_button": 1, "power": 0}) == []


def _dev(**report: object) -> DeviceConfig:
    return DeviceConfig.model_validate({
        "device_id": "d", "device_class": "cold_store", "report": report,
        "source": {"type": "simulator"},
    })


def _sample(**values: float) -> SourceSample:
    return SourceSample(datetime.now(UTC), [MetricValue(k, v, "u") for k, v in values.items()])


def test_report_on_change_with_deadband_and_on_period() -> None:
    cfg = _dev(deadbands={"temperature": 0.5}, period_s=60)
    st = ReportState()
    first = choose_readings(_sample(temperature=3.0, door=0), st, cfg, now=0)
    assert [r.metric for r in first] == ["temperature", "door"]  # first report: everything
    assert choose_readings(_sample(temperature=3.3, door=0), st, cfg, now=1) == []
    moved = choose_readings(_sample(temperature=3.6, door=1), st, cfg, now=2)
    assert [(r.metric, r.value) for r in moved] == [("temperature", 3.6), ("door", 1)]
    heartbeat = choose_readings(_sample(temperature=3.6, door=1), st, cfg, now=62)
    assert [r.metric for r in heartbeat] == ["temperature", "door"]


def test_config_errors_name_the_place(tmp_path: Path) -> None:
    path = tmp_path / "box.yaml"
    path.write_text(
        "site_id: s1\n"
        "devices:\n"
        "  - device_id: d1\n"
        "    device_class: cold_store\n"
        "    source: {type: modbus, host: 10.0.0.5,\n"
        "             registers: [{metric: temperature, address: 1, type: int64}]}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "devices.0.source.modbus.registers.0.type" in str(err.value)
    path.write_text("site_id: S 1\ndevices: []\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "site_id" in str(err.value)
    path.write_text("site_id: s1\ndevices: []\n")
    with pytest.raises(ConfigError, match="at least one device or camera"):
        load_config(path)


@pytest.mark.parametrize("name", ["cold-store.yaml", "elevator.yaml", "kitchen-camera.yaml"])
def test_shipped_example_configs_are_valid(name: str, tmp_path: Path) -> None:
    import yaml

    root = Path(__file__).resolve().parents[2]
    raw = yaml.safe_load((root / "deploy" / "edge" / name).read_text())
    for dev in raw.get("devices", []) + raw.get("cameras", []):  # secrets live on the box
        secret = tmp_path / f"{dev['device_id']}.secret"
        secret.write_text("s3cret\n")
        dev["password_file"] = str(secret)
    copy = tmp_path / name
    copy.write_text(yaml.safe_dump(raw))
    cfg = load_config(copy)
    assert cfg.devices or cfg.cameras
    assert all(d.secret() == "s3cret" for d in [*cfg.devices, *cfg.cameras])
