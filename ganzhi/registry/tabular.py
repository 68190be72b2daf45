"""Read a spreadsheet: CSV (UTF-8 with or without BOM, or GB18030 as Excel saves it in
China) or XLSX (its first sheet). Pure: bytes in, rows of text out.

The first non-empty row holds the column names; each later row is a mapping of column
name to text, numbered as the spreadsheet numbers it (the header is row 1 when the file
starts with it). Wholly empty rows are skipped.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, Literal

from ganzhi.registry import Invalid

MAX_BYTES = 5 * 1024 * 1024
MAX_ROWS = 10_000
Format = Literal["csv", "xlsx"]

_XLSX_TYPES = ("spreadsheetml", "ms-excel", "officedocument")
_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0"  # an .xls of Excel 97-2003


@dataclass(frozen=True)
class RowError:
    """One reason a file is refused: its row (1: the header), column, and why."""

    row: int
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = f"row {self.row}" + (f", column {self.column}" if self.column else "")
        return f"{where}: {self.reason}"


class FileRefused(Invalid):
    """A file that cannot be taken as a whole; ``errors`` says why, row by row."""

    def __init__(self, errors: list[RowError]) -> None:
        self.errors = errors
        shown = "; ".join(str(e) for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"{len(errors)} problems: {shown}{more}")


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)


def detect_format(data: bytes, filename: str | None = None,
                  content_type: str | None = None) -> Format:
    """XLSX by its content (a zip), its name or its content type; CSV otherwise."""
    name = (filename or "").lower()
    if data.startswith(_OLE_MAGIC) or name.endswith(".xls"):
        raise FileRefused([RowError(1, None, "an .xls (Excel 97-2003) file: save it as"
                                    " .xlsx or .csv")])
    if data.startswith(_ZIP_MAGIC):
        return "xlsx"
    if name.endswith((".xlsx", ".xlsm")) or any(t in (content_type or "") for t in _XLSX_TYPES):
        raise FileRefused([RowError(1, None, "not a readable .xlsx file")])
    return "csv"


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise FileRefused([RowError(1, None, "text is neither UTF-8 nor GB18030")])


def _csv_rows(data: bytes) -> Iterator[list[str]]:
    text = _decode(data)
    first = text.lstrip("\r\n").split("\n", 1)[0]
    # The header's separator: a comma, or a semicolon or tab where it is the usual one.
    delimiter = max((",", ";", "\t"), key=first.count)
    try:
        yield from csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    except csv.Error as exc:
        raise FileRefused([RowError(1, None, f"not a readable CSV file: {exc}")]) from None


def cell_text(value: Any) -> str:
    """A spreadsheet cell as the text a person sees (13800138000, not 13800138000.0)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)


def _xlsx_rows(data: bytes) -> list[list[str]]:
    from openpyxl import load_workbook

    rows: list[list[str]] = []
    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        try:
            sheet = book.worksheets[0] if book.worksheets else None
            for values in sheet.iter_rows(values_only=True) if sheet else ():
                rows.append([cell_text(v) for v in values])
                if len(rows) > MAX_ROWS + 100:  # the header and empty rows, with room
                    break
        finally:
            book.close()
    except Exception as exc:  # any defect of an untrusted file: refused, never a 500
        raise FileRefused([RowError(1, None, f"not a readable .xlsx file: {exc}")]) from None
    return rows


def _header(cells: list[str]) -> list[str]:
    return [c.replace("\ufeff", "").strip().lower() for c in cells]


def _table(rows: Iterable[list[str]]) -> Table:
    columns: list[str] | None = None
    out: list[tuple[int, dict[str, str]]] = []
    for number, cells in enumerate(rows, start=1):
        if not any(c.strip() for c in cells):
            continue
        if columns is None:
            columns = _header(cells)
            continue
        if len(out) >= MAX_ROWS:
            raise FileRefused([RowError(number, None, f"more than {MAX_ROWS} rows: split"
                                        " the file")])
        padded = cells + [""] * (len(columns) - len(cells))
        extra = [c for c in padded[len(columns):] if c.strip()]
        row = {col: value.strip() for col, value in zip(columns, padded, strict=False) if col}
        if extra:
            row[""] = ", ".join(extra)  # cells beyond the header: reported by the reader
        out.append((number, row))
    if columns is None:
        raise FileRefused([RowError(1, None, "the file is empty: no header row")])
    return Table(columns, out)


def read_table(data: bytes, filename: str | None = None,
               content_type: str | None = None) -> Table:
    """The table in a CSV or XLSX file; :class:`FileRefused` when it cannot be read."""
    if len(data) > MAX_BYTES:
        raise FileRefused([RowError(1, None, f"the file is over {MAX_BYTES // 1024 // 1024}"
                                    " MiB: split it")])
    fmt = detect_format(data, filename, content_type)
    return _table(_xlsx_rows(data) if fmt == "xlsx" else _csv_rows(data))


def header_errors(table: Table, known: Mapping[str, str], required: Iterable[str],
                  prefixes: Iterable[str] = ()) -> tuple[dict[str, str], list[RowError]]:
    """Map the file's column names (or their aliases in ``known``) to field names; the
    problems of the header: unknown, doubled or missing columns."""
    mapping: dict[str, str] = {}
    errors: list[RowError] = []
    seen: dict[str, str] = {}
    for column in table.columns:
        if not column:
            continue
        name = known.get(column)
        if name is None and any(column.startswith(p) for p in prefixes):
            name = column
        if name is None:
            errors.append(RowError(1, column, "unknown column; expected: "
                                   + ", ".join(sorted(set(known.values())))))
        elif name in seen:
            errors.append(RowError(1, column, f"the same column as {seen[name]!r}"))
        else:
            seen[name] = column
            mapping[column] = name
    for name in required:
        if name not in seen:
            errors.append(RowError(1, name, "missing column"))
    return mapping, errors
