"""An edge box file registers its site and devices with the params their rules need."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from edge.config import load_config
from ganzhi.cli import main

pytestmark = pytest.mark.integration
BOX_YAML = """
site_id: store-9
broker: {host: 127.0.0.1, port: 1883}
spool: {path: SPOOL}
devices:
  - device_id: freezer-1
    device_class: cold_store
    params: {variant: frozen, set_point_c: -20}
    source: {type: simulator, kind: cold_room}
  - device_id: lift-1
    device_class: elevator
    params: {rated_speed_mps: 1.75, top_landing_m: 30.0}
    source: {type: simulator, kind: elevator}
"""


def test_import_box_registers_site_and_params(pg_dsn: str, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("GANZHI_DB__DSN", pg_dsn)
    path = tmp_path / "box.yaml"
    path.write_text(BOX_YAML.replace("SPOOL", str(tmp_path / "spool.db")))
    box = load_config(path)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO jurisdictions (id, name, level, path)"
                     " VALUES ('city', 'City', 'city', '/city/')")
    args = ["registry", "import-box", str(path), "--jurisdiction", "city", "--by", "installer"]
    assert main(args) == 0
    assert "created" in capsys.readouterr().out
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT site_id, device_id, device_class, params FROM devices"
                            " ORDER BY device_id").fetchall()
        audit = conn.execute("SELECT count(*) FROM audit_log WHERE actor = 'installer'"
                             ).fetchone()
    assert rows == sorted([(s, d, c.value, p) for s, d, c, p in box.registry_entries()],
                          key=lambda r: r[1])
    assert rows[0][3] == {"variant": "frozen", "set_point_c": -20.0}
    assert audit is not None and audit[0] == 1 + len(rows)
    assert main(args) == 0  # again: the devices are updated, nothing doubled
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT count(*) FROM devices").fetchone()
    assert row is not None and row[0] == len(rows)
    path.write_text(BOX_YAML.replace("SPOOL", str(tmp_path / "spool.db"))
                    .replace("store-9", "store-10"))
    assert main(["registry", "import-box", str(path), "--jurisdiction", "nowhere"]) == 1
