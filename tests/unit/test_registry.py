"""Registry validation and spreadsheet reading: pure, no database."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook
from pydantic import ValidationError

from ganzhi.registry.bulk import parse_devices, parse_sites
from ganzhi.registry.models import (
    Category,
    DeviceIn,
    DevicePatch,
    JurisdictionIn,
    JurisdictionPatch,
    SiteIn,
    SitePatch,
    uscc_check_char,
    uscc_problem,
)
from ganzhi.registry.store import device_status
from ganzhi.registry.tabular import FileRefused, cell_text, detect_format, read_table

USCC = "91350100M000100Y43"
SITE = {"id": "site-a", "jurisdiction_id": "futian", "name": "老王饭店",
        "category": "restaurant"}


def xlsx(rows: list[list[Any]]) -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


# --- models --------------------------------------------------------------------------


def test_uscc_check_character() -> None:
    assert uscc_check_char(USCC[:17]) == "3"
    assert uscc_problem(USCC) is None
    assert "expected '3'" in (uscc_problem(USCC[:17] + "4") or "")
    assert "cannot appear" in (uscc_problem("I1350100M000100Y43") or "")


@pytest.mark.parametrize(("given", "kept"), [
    (USCC.lower(), USCC),                   # an 18-character code, kept upper-case
    ("JY14403050123456", "JY14403050123456"),  # a 食品经营许可证 number: free text
    ("粤食药监 2021-001", "粤食药监 2021-001"),
    ("", None),
    (None, None),
])
def test_licence_numbers(given: str | None, kept: str | None) -> None:
    assert SiteIn.model_validate({**SITE, "licence_no": given}).licence_no == kept


def test_a_wrong_uscc_is_refused_with_the_reason() -> None:
    with pytest.raises(ValidationError, match="统一社会信用代码"):
        SiteIn.model_validate({**SITE, "licence_no": USCC[:17] + "X"})


@pytest.mark.parametrize(("label", "category"), [
    ("餐饮", Category.RESTAURANT), ("食堂", Category.CANTEEN), ("冷库", Category.COLD_STORE),
    ("电梯", Category.ELEVATOR_SITE), ("Other", Category.OTHER),
])
def test_categories_by_value_or_chinese_label(label: str, category: Category) -> None:
    assert SiteIn.model_validate({**SITE, "category": label}).category is category


@pytest.mark.parametrize("bad", [
    {"id": "Site A"}, {"id": ""}, {"category": "bar"}, {"name": "  "},
    {"contact_phone": "call me"}, {"jurisdiction_id": "Futian"}, {"extra": 1},
])
def test_bad_sites(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SiteIn.model_validate({**SITE, **bad})


def test_jurisdiction_ids_are_path_safe() -> None:
    JurisdictionIn(id="gd", name="广东省", level="province")
    for bad in ("a/b", "A", "a.b", "-a", "a" * 65):
        with pytest.raises(ValidationError):
            JurisdictionIn(id=bad, name="x", level="city")


def test_patches_change_only_what_they_name() -> None:
    assert SitePatch(name="新名字").changes() == {"name": "新名字"}
    assert SitePatch(licence_no=None).changes() == {"licence_no": None}
    assert JurisdictionPatch(parent_id=None).changes() == {"parent_id": None}
    with pytest.raises(ValidationError, match="name cannot be null"):
        SitePatch(name=None)
    with pytest.raises(ValidationError, match="params cannot be null"):
        DevicePatch(params=None)


def test_device_params_are_checked_per_class() -> None:
    d = DeviceIn(device_id="cold-1", device_class="cold_store",
                 params={"variant": "frozen", "set_point_c": -20})
    assert d.params == {"variant": "frozen", "set_point_c": -20.0}
    with pytest.raises(ValidationError, match="rated_speed_mps"):
        DeviceIn.model_validate({"device_id": "lift-1", "device_class": "elevator",
                                 "params": {"rated_speed_mps": -1}})
    with pytest.raises(ValidationError, match="bytes as JSON"):
        DeviceIn.model_validate({"device_id": "cam-1", "device_class": "kitchen_camera",
                                 "params": {"x": "y" * 9000}})


def test_device_status() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert device_status(None, False, now, 180) == "unknown"
    assert device_status(now - timedelta(seconds=60), False, now, 180) == "online"
    assert device_status(now - timedelta(seconds=600), False, now, 180) == "offline"
    assert device_status(now, True, now, 180) == "offline"  # device.offline open


# --- reading files -------------------------------------------------------------------

CSV = ("id,jurisdiction_id,name,category,address,licence_no,contact_name,contact_phone\n"
       f"site-a,futian,老王饭店,餐饮,深圳市福田区福华路1号,{USCC},王师傅,13800138000\n"
       "site-b,futian,福田区第一中学食堂,canteen,,,,\n")


@pytest.mark.parametrize("encode", [
    lambda t: t.encode(), lambda t: b"\xef\xbb\xbf" + t.encode(),
    lambda t: t.encode("gb18030"),
], ids=["utf-8", "utf-8 with BOM", "gb18030"])
def test_csv_in_any_usual_encoding(encode: Any) -> None:
    sites, fields, errors = parse_sites(read_table(encode(CSV), "sites.csv"))
    assert errors == []
    assert [(n, s.id, s.name) for n, s in sites] == [
        (2, "site-a", "老王饭店"), (3, "site-b", "福田区第一中学食堂")]
    assert sites[0][1].category is Category.RESTAURANT
    assert "contact_phone" in fields


def test_chinese_headers_semicolons_and_blank_rows() -> None:
    text = "编号;辖区;名称;类别\n\nsite-c;futian;冷库甲;冷库\n;;;\n"
    sites, fields, errors = parse_sites(read_table(text.encode()))
    assert errors == [] and fields == {"id", "jurisdiction_id", "name", "category"}
    assert [(n, s.id) for n, s in sites] == [(3, "site-c")]


def test_xlsx_sites_with_numbers_as_text() -> None:
    data = xlsx([["id", "jurisdiction_id", "name", "category", "contact_phone"],
                 ["site-a", "futian", "老王饭店", "餐饮", 13800138000],
                 [None, None, None, None, None],
                 ["site-b", "futian", "食堂", "canteen", 075583001234.0]])
    assert detect_format(data) == "xlsx"
    sites, _, errors = parse_sites(read_table(data, "sites.xlsx"))
    assert errors == []
    assert [(n, s.contact_phone) for n, s in sites] == [(2, "13800138000"),
                                                         (4, "75583001234")]


def test_bad_rows_are_each_reported_by_row_and_column() -> None:
    text = ("id,jurisdiction_id,name,category,licence_no\n"
            "site-a,futian,好店,restaurant,\n"
            "Bad Id,futian,坏店,restaurant,\n"
            "site-c,futian,,bar,\n"
            "site-a,futian,重复,restaurant,\n"
            f"site-f,futian,错号,restaurant,{USCC[:17]}0\n")
    _, _, errors = parse_sites(read_table(text.encode()))
    got = {(e.row, e.column) for e in errors}
    assert got == {(3, "id"), (4, "name"), (4, "category"), (5, "id"),
                   (6, "licence_no")}
    assert any("also on row 2" in e.reason for e in errors)
    assert all(e.reason for e in errors)


def test_header_problems() -> None:
    _, _, errors = parse_sites(read_table(b"id,name,colour\nsite-a,x,red\n"))
    assert {(e.row, e.column) for e in errors} == {
        (1, "colour"), (1, "jurisdiction_id"), (1, "category")}


@pytest.mark.parametrize(("data", "name", "reason"), [
    (b"", "x.csv", "empty"),
    (b"\xd0\xcf\x11\xe0rest", "old.xls", ".xls"),
    (b"PK\x03\x04broken", "x.xlsx", "not a readable .xlsx"),
    (b"not a zip", "x.xlsx", "not a readable .xlsx"),
    (b"\xff\xfe\x00bad\x81\x30", "x.csv", "neither UTF-8 nor GB18030"),
])
def test_unreadable_files(data: bytes, name: str, reason: str) -> None:
    with pytest.raises(FileRefused, match=reason):
        read_table(data, name)


def test_cell_text() -> None:
    assert cell_text(None) == "" and cell_text(3.0) == "3" and cell_text(2.5) == "2.5"
    assert cell_text(True) == "true"


def test_device_rows_with_params_columns() -> None:
    text = ("device_id,device_class,model,params,params.set_point_c\n"
            'cold-1,cold_store,TH-1,"{""variant"": ""frozen""}",-20\n'
            "lift-1,elevator,,,\n"
            "cam-1,kitchen_camera,,[1],\n"
            "lift-2,elevator,,\"{\"\"rated_speed_mps\"\": 0}\",\n")
    devices, fields, errors = parse_devices(read_table(text.encode()))
    assert [(n, d.device_id, d.params) for n, d in devices] == [
        (2, "cold-1", {"variant": "frozen", "set_point_c": -20.0}), (3, "lift-1", {})]
    assert {(e.row, e.column) for e in errors} == {(4, "params"), (5, "params")}
    assert "params" in fields


def test_params_columns_change_the_stored_params_when_there_is_no_params_column() -> None:
    text = "device_id,device_class,params.set_point_c,params.high_limit_c\ncold-1,cold_store,-22,\n"
    stored = {"cold-1": {"variant": "frozen", "high_limit_c": -10.0}}
    devices, _, errors = parse_devices(read_table(text.encode()), stored)
    assert errors == []
    assert devices[0][1].params == {"variant": "frozen", "set_point_c": -22.0}


def test_the_example_file_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy/registry/sites.example.csv"
    sites, _, errors = parse_sites(read_table(example.read_bytes(), example.name))
    assert errors == [] and len(sites) == 5
    assert {s.category for _, s in sites} == set(Category)


def test_nul_characters_are_refused_not_sent_to_the_database() -> None:
    with pytest.raises(ValidationError, match="NUL"):
        SiteIn.model_validate({**SITE, "name": "a\x00b"})
    with pytest.raises(ValidationError, match="NUL"):
        DeviceIn.model_validate({"device_id": "cam-1", "device_class": "kitchen_camera",
                                 "params": {"k\x00": 1}})
    _, _, errors = parse_sites(read_table(
        b"id,jurisdiction_id,name,category\nsite-a,futian,a\x00b,other\n"))
    assert [e.row for e in errors] == [2] and "NUL" in errors[0].reason
