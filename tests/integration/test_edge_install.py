"""Installing and upgrading an edge box (deploy/edge/box): offline from a wheelhouse, into
a staging root; an upgrade switches the release and keeps the spool and the
configuration; the unit verifies with systemd-analyze."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BOX = ROOT / "deploy" / "edge" / "box"


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheelhouse")
    res = subprocess.run([str(BOX / "build-wheelhouse.sh"), str(out), str(ROOT)],
                         env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable,
                              "HOME": str(Path.home())},
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    assert list(out.glob("ganzhi-*.whl"))
    return out


def install(root: Path, wheelhouse: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BOX / "install.sh"), "--root", str(root), "--wheelhouse", str(wheelhouse),
         "--python", sys.executable, "--no-systemctl", "--no-user", *extra],
        capture_output=True, text=True, timeout=600)


def test_install_then_upgrade_keeps_spool_and_config(wheelhouse: Path, tmp_path: Path) -> None:
    root = tmp_path / "box"
    first = install(root, wheelhouse, "--config", str(ROOT / "deploy/edge/cold-store.yaml"))
    assert first.returncode == 0, first.stdout + first.stderr
    current = root / "opt/ganzhi-edge/current"
    release1 = current.resolve()
    assert (current / "bin/ganzhi").exists()
    # The agent is there and refuses a bad configuration with its reason (exit 2).
    bad = tmp_path / "bad.yaml"
    bad.write_text("site_id: x\nbroker: {host: h, port: 99999}\n")
    res = subprocess.run([str(current / "bin/ganzhi"), "edge", "--config", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "broker.port" in res.stdout
    config = root / "etc/ganzhi-edge/box.yaml"
    assert config.read_text() == (ROOT / "deploy/edge/cold-store.yaml").read_text()
    # The box ran for a while: a spool with messages not yet sent, a local config edit.
    spool = root / "var/lib/ganzhi-edge/spool.db"
    with sqlite3.connect(spool) as db:
        db.execute("CREATE TABLE kept (x)")
        db.execute("INSERT INTO kept VALUES ('not sent yet')")
    config.write_text(config.read_text() + "# edited on the box\n")

    second = install(root, wheelhouse, "--config", str(ROOT / "deploy/edge/elevator.yaml"))
    assert second.returncode == 0, second.stdout + second.stderr
    assert current.resolve() != release1 and release1.exists()  # kept to roll back to
    with sqlite3.connect(spool) as db:
        assert db.execute("SELECT x FROM kept").fetchall() == [("not sent yet",)]
    assert config.read_text().endswith("# edited on the box\n")  # never overwritten
    assert "keeping the configuration" in second.stdout
    for _ in range(3):
        assert install(root, wheelhouse).returncode == 0
    assert len(list((root / "opt/ganzhi-edge/releases").iterdir())) == 3

    # Refused: no wheelhouse, a bad name.
    assert install(root, tmp_path / "none").returncode == 2
    assert install(root, wheelhouse, "--name", "../x").returncode == 2


def test_the_unit_verifies(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze not found (Debian's systemd package; ./dev test)")
    unit = (BOX / "ganzhi-edge@.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "Restart=always" in unit
    copy = tmp_path / "ganzhi-edge@box.service"
    copy.write_text(unit.replace("/opt/ganzhi-edge/current/bin/ganzhi", "/bin/true"))
    res = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), \
        res.stdout + res.stderr
