"""Register decoding, encoding and read planning for the Modbus source (no I/O)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge.sources.modbus import (
    ModbusSourceConfig,
    RegisterKind,
    RegisterMap,
    decode,
    encode,
    plan_reads,
)
from edge.sources.modbus import decode_block as _decode_block


def _reg(**kw: object) -> RegisterMap:
    return RegisterMap.model_validate({"metric": "x", "address": 0, **kw})


@pytest.mark.parametrize(
    ("words", "reg", "expected"),
    [
        ([0xFFFF], {"type": "uint16"}, 65535),
        ([0x8000], {"type": "int16"}, -32768),
        ([0x7FFF], {"type": "int16"}, 32767),
        ([0xFF9D], {"type": "int16", "scale": 0.1}, -9.9),
        ([0xFFFF, 0xFFFE], {"type": "uint32"}, 0xFFFFFFFE),
        ([0xFFFE, 0xFFFF], {"type": "uint32", "word_order": "little"}, 0xFFFFFFFE),
        ([0xFFFF, 0xFF38], {"type": "int32", "scale": 0.01}, -2.0),
        ([0xFF38, 0xFFFF], {"type": "int32", "word_order": "little", "scale": 0.01}, -2.0),
        ([0xC1A0, 0x0000], {"type": "float32"}, -20.0),
        ([0x0000, 0xC1A0], {"type": "float32", "word_order": "little"}, -20.0),
        ([0], {"type": "bool"}, 0.0),
        ([7], {"type": "bool"}, 1.0),
        ([500], {"type": "uint16", "scale": 0.1, "offset": -40}, 10.0),
    ],
)
def test_decode_types_word_order_scale_offset(
    words: list[int], reg: dict[str, object], expected: float
) -> None:
    assert decode(words, _reg(**reg)) == pytest.approx(expected)


@pytest.mark.parametrize("typ", ["uint16", "int16", "uint32", "int32", "float32"])
@pytest.mark.parametrize("order", ["big", "little"])
def test_encode_is_the_inverse_of_decode(typ: str, order: str) -> None:
    signed = typ.startswith("int") or typ == "float32"
    for value in ([-18.7, 0.0, 3.2] if signed else [0.0, 3.2, 6553.5]):
        r = _reg(type=typ, word_order=order, scale=0.1)
        assert decode(encode(value, r), r) == pytest.approx(value, abs=1e-4)


def test_encode_saturates_integers() -> None:
    assert encode(-5, _reg(type="uint16")) == [0]
    assert encode(1e9, _reg(type="int16")) == [0x7FFF]


def test_kind_also_accepted_as_table_and_bits_must_be_bool() -> None:
    assert _reg(table="coil", type="bool").kind is RegisterKind.COIL
    assert _reg(kind="input").kind is RegisterKind.INPUT
    with pytest.raises(ValidationError, match="type must be bool"):
        _reg(kind="discrete_input", type="int16")
    with pytest.raises(ValidationError):
        _reg(kind="holding", colour="red")


def test_config_refuses_a_metric_mapped_twice() -> None:
    with pytest.raises(ValidationError, match="mapped twice"):
        ModbusSourceConfig.model_validate({
            "type": "modbus", "host": "h",
            "registers": [{"metric": "t", "address": 0}, {"metric": "t", "address": 1}]})


def test_plan_groups_contiguous_addresses_per_kind() -> None:
    regs = [_reg(metric="a", address=0, type="int16"),
            _reg(metric="b", address=1, type="float32"),  # 1-2
            _reg(metric="c", address=3),
            _reg(metric="d", address=10),  # gap: a new request
            _reg(metric="e", address=0, kind="coil", type="bool"),
            _reg(metric="f", address=1, kind="coil", type="bool"),
            _reg(metric="g", address=0, kind="input")]
    blocks = [(b.kind.value, b.address, b.count, [r.metric for r in b.entries])
              for b in plan_reads(regs)]
    assert blocks == [("holding", 0, 4, ["a", "b", "c"]), ("holding", 10, 1, ["d"]),
                      ("input", 0, 1, ["g"]), ("coil", 0, 2, ["e", "f"])]
    first = plan_reads(regs)[0]
    got = _decode_block(first, [0xFFFE, 0x4148, 0x0000, 9])
    assert [(m, v.value) for m, v in got.items()] == [("a", -2), ("b", 12.5), ("c", 9)]


def test_plan_splits_long_runs() -> None:
    regs = [_reg(metric=f"m{i}", address=i) for i in range(300)]
    assert [b.count for b in plan_reads(regs)] == [125, 125, 50]
