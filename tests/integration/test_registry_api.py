"""The registry API against real PostgreSQL: CRUD with audit rows, subtree moves, scope
isolation between sibling districts, spreadsheet imports (500 sites, idempotent, all or
nothing). The caller is set per request by overriding ``get_caller`` (sign-in is tested
with the accounts)."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from openpyxl import Workbook
from pydantic import SecretStr

from api.deps import Caller, get_caller
from api.main import create_app
from ganzhi.access import Permission, Role, Scope, permissions_of
from ganzhi.cli import main
from ganzhi.settings import AuthSettings, DatabaseSettings, Settings, get_settings

from access_fixtures import api_dsn

pytestmark = pytest.mark.integration

USCC = "91350100M000100Y43"


def caller(name: str, role: Role, path: str | None) -> Caller:
    return Caller(f"user:{name}", permissions_of(role), Scope(path=path), "user")


ROOT = caller("root", Role.ADMINISTRATOR, None)
FUTIAN = caller("ft", Role.SUPERVISOR, "/gd/sz/futian/")
NANSHAN = caller("ns", Role.SUPERVISOR, "/gd/sz/nanshan/")
FUTIAN_VIEWER = caller("ftv", Role.VIEWER, "/gd/sz/futian/")
SITE_KEY = Caller("key:export", frozenset({Permission.READ, Permission.EDIT_REGISTRY}),
                  Scope(site_ids=frozenset({"ft-1"})), "key")


class Api:
    """An HTTP client whose caller is ``as_`` (ROOT unless told)."""

    def __init__(self, client: httpx.AsyncClient, dsn: str) -> None:
        self.client = client
        self.dsn = dsn
        self.who = ROOT

    async def call(self, method: str, url: str, who: Caller | None = None,
                   **kwargs: Any) -> httpx.Response:
        self.who = who or ROOT
        return await self.client.request(method, url, **kwargs)

    async def ok(self, method: str, url: str, who: Caller | None = None,
                 status: int = 200, **kwargs: Any) -> Any:
        response = await self.call(method, url, who, **kwargs)
        assert response.status_code == status, response.text
        return response.json() if response.content else None

    def sql(self, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []


@pytest.fixture
async def api(pg_dsn: str) -> AsyncIterator[Api]:
    settings = Settings(db=DatabaseSettings(dsn=SecretStr(api_dsn(pg_dsn)), pool_max=2),
                        auth=AuthSettings(jwt_secret=SecretStr("k" * 40)))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            holder = Api(client, pg_dsn)
            app.dependency_overrides[get_caller] = lambda: holder.who
            await tree(holder)
            yield holder


async def tree(api: Api) -> None:
    """/gd/ -> /gd/sz/ -> futian, nanshan; a site in each district."""
    for node, parent, level in (("gd", None, "province"), ("sz", "gd", "city"),
                                ("futian", "sz", "district"), ("nanshan", "sz", "district")):
        await api.ok("POST", "/api/v1/jurisdictions", status=201,
                     json={"id": node, "name": node.upper(), "level": level,
                           "parent_id": parent})
    for site, node in (("ft-1", "futian"), ("ns-1", "nanshan")):
        await api.ok("POST", "/api/v1/sites", status=201, json={
            "id": site, "jurisdiction_id": node, "name": f"{node} 饭店",
            "category": "restaurant"})


def audit_rows(api: Api, entity_id: str) -> list[tuple[Any, ...]]:
    return api.sql("SELECT actor, action, before, after FROM audit_log WHERE entity_id = %s"
                   " ORDER BY id", [entity_id])


# --- CRUD and audit --------------------------------------------------------------------


async def test_site_and_device_crud_are_audited(api: Api) -> None:
    site = await api.ok("POST", "/api/v1/sites", FUTIAN, 201, json={
        "id": "ft-2", "jurisdiction_id": "futian", "name": "福田区第一中学食堂",
        "category": "食堂", "licence_no": USCC.lower(), "contact_phone": "0755-8300 1234"})
    assert site["category"] == "canteen" and site["licence_no"] == USCC
    assert site["jurisdiction_path"] == "/gd/sz/futian/"
    got = await api.ok("PATCH", "/api/v1/sites/ft-2", FUTIAN,
                       json={"name": "福田中学食堂", "address": "福华路1号"})
    assert got["name"] == "福田中学食堂" and got["address"] == "福华路1号"
    await api.ok("PATCH", "/api/v1/sites/ft-2", FUTIAN, json={"name": "福田中学食堂"})

    device = await api.ok("POST", "/api/v1/sites/ft-2/devices", FUTIAN, 201, json={
        "device_id": "cold-1", "device_class": "cold_store", "model": "TH-20"})
    assert device["status"] == "unknown" and device["incomplete"] == ["variant"]
    device = await api.ok("PATCH", "/api/v1/sites/ft-2/devices/cold-1", FUTIAN,
                          json={"params": {"variant": "frozen", "set_point_c": -20}})
    assert device["incomplete"] == [] and device["params"]["variant"] == "frozen"
    bad = await api.call("PATCH", "/api/v1/sites/ft-2/devices/cold-1", FUTIAN,
                         json={"params": {"variant": "chilled", "set_point_c": -20}})
    assert bad.status_code == 422 and "chilled" in bad.json()["detail"][0]["msg"]
    assert (await api.call("DELETE", "/api/v1/sites/ft-2", FUTIAN)).status_code == 409
    await api.ok("DELETE", "/api/v1/sites/ft-2/devices/cold-1", FUTIAN, 204)
    await api.ok("DELETE", "/api/v1/sites/ft-2", FUTIAN, 204)
    assert (await api.call("GET", "/api/v1/sites/ft-2", FUTIAN)).status_code == 404

    site_log = audit_rows(api, "ft-2")
    assert [(a, b) for a, b, _, _ in site_log] == [
        ("user:ft", "site.create"), ("user:ft", "site.update"), ("user:ft", "site.delete")]
    _, _, before, after = site_log[1]
    assert before["name"] == "福田区第一中学食堂" and after["name"] == "福田中学食堂"
    device_log = audit_rows(api, "ft-2/cold-1")
    assert [b for _, b, _, _ in device_log] == ["device.create", "device.update",
                                                "device.delete"]
    assert device_log[1][2]["params"] == {} and device_log[1][3]["params"]["variant"] == "frozen"
    paths = api.sql("SELECT DISTINCT jurisdiction_path FROM audit_log WHERE site_id = 'ft-2'")
    assert paths == [("/gd/sz/futian/",)]


async def test_bad_input_is_4xx_with_a_reason(api: Api) -> None:
    for body in ({"id": "BAD", "jurisdiction_id": "futian", "name": "x", "category": "other"},
                 {"id": "x1", "jurisdiction_id": "futian", "name": "x", "category": "bar"},
                 {"id": "x1", "jurisdiction_id": "futian", "name": "x", "category": "other",
                  "licence_no": USCC[:17] + "0"}):
        response = await api.call("POST", "/api/v1/sites", json=body)
        assert response.status_code == 422 and response.json()["detail"][0]["msg"]
    taken = await api.call("POST", "/api/v1/sites", json={
        "id": "ft-1", "jurisdiction_id": "futian", "name": "x", "category": "other"})
    assert taken.status_code == 409 and "taken" in taken.json()["detail"]
    nowhere = await api.call("POST", "/api/v1/sites", json={
        "id": "x2", "jurisdiction_id": "nowhere", "name": "x", "category": "other"})
    assert nowhere.status_code == 404
    for params in ({"limit": 0}, {"q": "a\x00"}, {"category": "bar"}, {"after": "A B"}):
        assert (await api.call("GET", "/api/v1/sites", params=params)).status_code == 422


# --- the tree --------------------------------------------------------------------------


async def test_moving_a_node_moves_its_subtree(api: Api) -> None:
    await api.ok("POST", "/api/v1/jurisdictions", FUTIAN, 201,
                 json={"id": "ft-a", "name": "园岭街道", "level": "station",
                       "parent_id": "futian"})
    await api.ok("POST", "/api/v1/jurisdictions", FUTIAN, 201,
                 json={"id": "ft-a-1", "name": "社区", "level": "community",
                       "parent_id": "ft-a"})
    await api.ok("POST", "/api/v1/jurisdictions", status=201,
                 json={"id": "gz", "name": "广州", "level": "city", "parent_id": "gd"})
    moved = await api.ok("PATCH", "/api/v1/jurisdictions/futian",
                         json={"parent_id": "gz", "name": "福田区"})
    assert moved["path"] == "/gd/gz/futian/" and moved["name"] == "福田区"
    paths = dict(api.sql("SELECT id, path FROM jurisdictions"))
    assert paths["ft-a"] == "/gd/gz/futian/ft-a/"
    assert paths["ft-a-1"] == "/gd/gz/futian/ft-a/ft-a-1/"
    assert paths["nanshan"] == "/gd/sz/nanshan/"
    page = await api.ok("GET", "/api/v1/sites", params={"jurisdiction": "gz"})
    assert [s["id"] for s in page["items"]] == ["ft-1"]
    assert [b for _, b, _, _ in audit_rows(api, "futian")][-1] == "jurisdiction.move"

    cycle = await api.call("PATCH", "/api/v1/jurisdictions/gd", json={"parent_id": "ft-a"})
    assert cycle.status_code == 409 and "own subtree" in cycle.json()["detail"]
    to_root = await api.ok("PATCH", "/api/v1/jurisdictions/ft-a", json={"parent_id": None})
    assert to_root["path"] == "/ft-a/" and to_root["parent_id"] is None


async def test_who_may_change_the_tree(api: Api) -> None:
    root = await api.call("POST", "/api/v1/jurisdictions", FUTIAN,
                          json={"id": "x", "name": "x", "level": "city"})
    assert root.status_code == 403 and "root" in root.json()["detail"]
    outside = await api.call("POST", "/api/v1/jurisdictions", FUTIAN,
                             json={"id": "x", "name": "x", "level": "s", "parent_id": "nanshan"})
    assert outside.status_code == 404
    own = await api.call("DELETE", "/api/v1/jurisdictions/futian", FUTIAN)
    assert own.status_code == 403
    own = await api.call("PATCH", "/api/v1/jurisdictions/futian", FUTIAN,
                         json={"parent_id": "futian"})
    assert own.status_code == 403
    viewer = await api.call("POST", "/api/v1/jurisdictions", FUTIAN_VIEWER,
                            json={"id": "x", "name": "x", "level": "s", "parent_id": "futian"})
    assert viewer.status_code == 403 and "edit_registry" in viewer.json()["detail"]
    not_empty = await api.call("DELETE", "/api/v1/jurisdictions/sz")
    assert not_empty.status_code == 409 and "not empty" in not_empty.json()["detail"]
    await api.ok("POST", "/api/v1/jurisdictions", status=201,
                 json={"id": "empty", "name": "空", "level": "s", "parent_id": "sz"})
    await api.ok("DELETE", "/api/v1/jurisdictions/empty", status=204)
    assert [b for _, b, _, _ in audit_rows(api, "empty")] == ["jurisdiction.create",
                                                              "jurisdiction.delete"]


# --- scope ---------------------------------------------------------------------------


async def test_sibling_districts_do_not_see_each_other(api: Api) -> None:
    nodes = await api.ok("GET", "/api/v1/jurisdictions", FUTIAN)
    assert [n["id"] for n in nodes] == ["futian"]
    assert (await api.call("GET", "/api/v1/jurisdictions/nanshan", FUTIAN)).status_code == 404
    page = await api.ok("GET", "/api/v1/sites", FUTIAN_VIEWER)
    assert [s["id"] for s in page["items"]] == ["ft-1"]
    assert (await api.call("GET", "/api/v1/sites", FUTIAN,
                           params={"jurisdiction": "nanshan"})).status_code == 404
    for method, url, body in (
        ("GET", "/api/v1/sites/ns-1", None),
        ("PATCH", "/api/v1/sites/ns-1", {"name": "mine"}),
        ("DELETE", "/api/v1/sites/ns-1", None),
        ("GET", "/api/v1/sites/ns-1/devices", None),
        ("POST", "/api/v1/sites/ns-1/devices",
         {"device_id": "d1", "device_class": "kitchen_camera"}),
        ("PATCH", "/api/v1/sites/ft-1", {"jurisdiction_id": "nanshan"}),
        ("POST", "/api/v1/sites", {"id": "x3", "jurisdiction_id": "nanshan", "name": "x",
                                   "category": "other"}),
    ):
        response = await api.call(method, url, FUTIAN, json=body)
        assert response.status_code == 404, (method, url, response.text)
    assert api.sql("SELECT name, jurisdiction_id FROM sites WHERE id = 'ns-1'") == [
        ("nanshan 饭店", "nanshan")]
    assert [s["id"] for s in (await api.ok("GET", "/api/v1/sites", NANSHAN))["items"]] == [
        "ns-1"]
    # A key limited to ft-1 sees and edits only ft-1, and adds no other site.
    assert [s["id"] for s in (await api.ok("GET", "/api/v1/sites", SITE_KEY))["items"]] == [
        "ft-1"]
    added = await api.call("POST", "/api/v1/sites", SITE_KEY, json={
        "id": "ft-9", "jurisdiction_id": "futian", "name": "x", "category": "other"})
    assert added.status_code == 403


async def test_site_filters_and_keyset_pages(api: Api) -> None:
    for i in range(5):
        await api.ok("POST", "/api/v1/sites", status=201, json={
            "id": f"ft-c{i}", "jurisdiction_id": "futian", "name": f"冷库{i}号",
            "category": "cold_store", "licence_no": f"JY1440305000000{i}"})
    cold = await api.ok("GET", "/api/v1/sites", params={"category": "cold_store", "limit": 2})
    assert [s["id"] for s in cold["items"]] == ["ft-c0", "ft-c1"] and cold["next_after"]
    rest = await api.ok("GET", "/api/v1/sites", params={
        "category": "cold_store", "limit": 10, "after": cold["next_after"]})
    assert [s["id"] for s in rest["items"]] == ["ft-c2", "ft-c3", "ft-c4"]
    assert rest["next_after"] is None
    assert [s["id"] for s in (await api.ok("GET", "/api/v1/sites",
                                           params={"q": "冷库3"}))["items"]] == ["ft-c3"]
    assert [s["id"] for s in (await api.ok("GET", "/api/v1/sites",
                                           params={"q": "jy14403050000004"}))["items"]] == ["ft-c4"]
    assert (await api.ok("GET", "/api/v1/sites", params={"q": "100%_"}))["items"] == []
    sz = await api.ok("GET", "/api/v1/sites", params={"jurisdiction": "sz", "limit": 500})
    assert len(sz["items"]) == 7


# --- devices: status ---------------------------------------------------------------------


async def test_device_status_from_readings_and_offline_alerts(api: Api) -> None:
    for device in ("cold-1", "cold-2", "cold-3"):
        await api.ok("POST", "/api/v1/sites/ft-1/devices", status=201, json={
            "device_id": device, "device_class": "cold_store",
            "params": {"variant": "chilled"}})
    now = datetime.now(UTC)
    api.sql("SELECT ganzhi_ensure_reading_partitions(%s, %s)",
            [now - timedelta(days=1), now])
    api.sql("INSERT INTO readings (time, site_id, device_id, metric, value, unit, msg_id)"
            " VALUES (%s, 'ft-1', 'cold-1', 'temperature', 4, 'celsius', gen_random_uuid()),"
            " (%s, 'ft-1', 'cold-2', 'temperature', 4, 'celsius', gen_random_uuid())",
            [now - timedelta(seconds=30), now - timedelta(hours=2)])
    api.sql("INSERT INTO alerts (fingerprint, rule_id, severity, site_id, device_id, status,"
            " started_at, summary) VALUES ('f', 'device.offline', 'major', 'ft-1', 'cold-1',"
            " 'open', %s, 'silent')", [now])
    devices = {d["device_id"]: d for d in await api.ok("GET", "/api/v1/sites/ft-1/devices")}
    assert devices["cold-1"]["status"] == "offline"  # the stream says so
    assert devices["cold-2"]["status"] == "offline"  # silent far longer than 3 x 60 s
    assert devices["cold-3"]["status"] == "unknown" and devices["cold-3"]["last_seen"] is None
    api.sql("UPDATE alerts SET status = 'resolved', ended_at = now()")
    one = await api.ok("GET", "/api/v1/sites/ft-1/devices/cold-1")
    assert one["status"] == "online" and one["provisioned"] is False
    assert datetime.fromisoformat(one["last_seen"]) == now - timedelta(seconds=30)
    assert (await api.call("GET", "/api/v1/sites/ft-1/devices/nope")).status_code == 404


# --- imports -------------------------------------------------------------------------

HEADER = "id,jurisdiction_id,name,category,address,licence_no,contact_name,contact_phone\n"


def sites_csv(n: int, *, node: str = "futian", name: str = "食堂") -> bytes:
    rows = [f"imp-{i:04d},{node},{name}{i}号,canteen,深圳市福田区{i}号,,张三,1380013{i:04d}\n"
            for i in range(n)]
    return ("\ufeff" + HEADER + "".join(rows)).encode()


async def upload(api: Api, url: str, data: bytes, who: Caller | None = None,
                 name: str = "sites.csv", **params: Any) -> httpx.Response:
    return await api.call("POST", url, who, params=params,
                          files={"file": (name, data, "text/csv")})


async def test_import_500_sites_then_again_changes_nothing(api: Api) -> None:
    data = sites_csv(500)
    dry = await upload(api, "/api/v1/sites/import", data, FUTIAN, dry_run="true")
    assert dry.status_code == 200 and len(dry.json()["created"]) == 500
    assert api.sql("SELECT count(*) FROM sites") == [(2,)]
    started = time.perf_counter()
    first = await upload(api, "/api/v1/sites/import", data, FUTIAN)
    took = time.perf_counter() - started
    assert first.status_code == 200, first.text
    assert len(first.json()["created"]) == 500 and first.json()["updated"] == []
    assert took < 10, f"500 sites took {took:.1f} s"
    print(f"500 sites imported in {took:.3f} s")
    assert api.sql("SELECT count(*) FROM sites WHERE jurisdiction_id = 'futian'") == [(501,)]
    audits = api.sql("SELECT count(*) FROM audit_log WHERE action = 'site.create'")[0][0]

    again = (await upload(api, "/api/v1/sites/import", data, FUTIAN)).json()
    assert again["created"] == [] and again["updated"] == [] and again["unchanged"] == 500
    assert api.sql("SELECT count(*) FROM audit_log WHERE action LIKE 'site.%%'") == [
        (audits,)]

    changed = data.replace("食堂7号".encode(), "新食堂7号".encode())
    report = (await upload(api, "/api/v1/sites/import", changed, FUTIAN)).json()
    assert report["updated"] == ["imp-0007"] and report["unchanged"] == 499
    log = audit_rows(api, "imp-0007")
    assert log[-1][1] == "site.update" and log[-1][3]["name"] == "新食堂7号"


async def test_a_bad_file_imports_nothing_and_says_why(api: Api) -> None:
    rows = sites_csv(50).decode().splitlines()
    rows[10] = rows[10].replace(",canteen,", ",bar,")
    rows[20] = rows[20].replace("imp-0019", "IMP 19")
    rows[30] = rows[30].replace(",futian,", ",nanshan,")  # outside the caller's scope
    rows[40] = rows[40].replace("imp-0039", "imp-0001")
    response = await upload(api, "/api/v1/sites/import", "\n".join(rows).encode(), FUTIAN)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]  # shaped like FastAPI's validation errors
    assert {tuple(e["loc"][1:]) for e in detail} == {
        (11, "category"), (21, "id"), (41, "id")}
    assert all(e["loc"][0] == "file" and e["msg"] and e["type"] for e in detail)
    assert api.sql("SELECT count(*) FROM sites") == [(2,)]
    # Once the fields are right, the scope is checked: still nothing written.
    rows[10] = rows[10].replace(",bar,", ",canteen,")
    rows[20] = rows[20].replace("IMP 19", "imp-0019")
    rows[40] = rows[40].replace("imp-0001", "imp-0039")
    response = await upload(api, "/api/v1/sites/import", "\n".join(rows).encode(), FUTIAN)
    assert response.status_code == 422
    assert [tuple(e["loc"][1:]) for e in response.json()["detail"]] == [
        (31, "jurisdiction_id")]
    assert api.sql("SELECT count(*) FROM sites") == [(2,)]
    taken = await upload(api, "/api/v1/sites/import",
                         (HEADER + "ns-1,futian,抢注,other,,,,\n").encode(), FUTIAN)
    assert taken.status_code == 422 and "outside your scope" in taken.text
    junk = await upload(api, "/api/v1/sites/import", b"PK\x03\x04junk", name="x.xlsx")
    assert junk.status_code == 422 and junk.json()["detail"][0]["loc"][1] == 1


async def test_import_devices_from_xlsx(api: Api) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["设备编号", "设备类型", "型号", "安装位置", "params.variant",
                  "params.set_point_c"])
    sheet.append(["cold-1", "cold_store", "TH-20", "一号冷库", "frozen", -20])
    sheet.append(["lift-1", "elevator", "OTIS", "1号梯", None, None])
    out = io.BytesIO()
    book.save(out)
    url = "/api/v1/sites/ft-1/devices/import"
    report = await upload(api, url, out.getvalue(), FUTIAN, name="devices.xlsx")
    assert report.status_code == 200, report.text
    assert report.json()["created"] == ["cold-1", "lift-1"]
    again = (await upload(api, url, out.getvalue(), FUTIAN, name="devices.xlsx")).json()
    assert again["unchanged"] == 2 and again["created"] == again["updated"] == []
    devices = {d["device_id"]: d for d in await api.ok("GET", "/api/v1/sites/ft-1/devices")}
    assert devices["cold-1"]["params"] == {"variant": "frozen", "set_point_c": -20.0}
    assert devices["lift-1"]["incomplete"] == ["rated_speed_mps", "top_landing_m"]
    assert devices["cold-1"]["location"] == "一号冷库"
    outside = await upload(api, "/api/v1/sites/ns-1/devices/import", out.getvalue(), FUTIAN,
                           name="devices.xlsx")
    assert outside.status_code == 404
    bad = b"device_id,device_class\ncold-9,toaster\n"
    response = await upload(api, url, bad, FUTIAN)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["file", 2, "device_class"] and error["msg"]
    assert api.sql("SELECT count(*) FROM devices") == [(2,)]


# --- the command line ------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy/registry/sites.example.csv"


@pytest.fixture
def cli_dsn(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("GANZHI_DB__DSN", pg_dsn)
    get_settings.cache_clear()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for node, parent, path in (("gd", None, "/gd/"), ("futian", "gd", "/gd/futian/"),
                                   ("nanshan", "gd", "/gd/nanshan/")):
            conn.execute("INSERT INTO jurisdictions (id, parent_id, name, level, path)"
                         " VALUES (%s, %s, %s, 'x', %s)", [node, parent, node, path])
    yield pg_dsn
    get_settings.cache_clear()


def test_cli_imports_the_example_file(cli_dsn: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    def count(table: str) -> int:
        with psycopg.connect(cli_dsn) as conn:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            assert row is not None
            return int(row[0])

    assert main(["registry", "import-sites", str(EXAMPLE), "--dry-run"]) == 0
    assert "5 would be created" in capsys.readouterr().out and count("sites") == 0
    assert main(["registry", "import-sites", str(EXAMPLE), "--by", "cli:test"]) == 0
    assert count("sites") == 5
    assert main(["registry", "import-sites", str(EXAMPLE)]) == 0
    assert "5 unchanged" in capsys.readouterr().out

    bad = tmp_path / "bad.csv"
    bad.write_text("id,jurisdiction_id,name,category\nnew-1,nowhere,x,other\n")
    assert main(["registry", "import-sites", str(bad)]) == 1
    assert "row 2, column jurisdiction_id" in capsys.readouterr().err
    devices = tmp_path / "devices.csv"
    devices.write_text("device_id,device_class,params\n"
                       'lift-1,elevator,"{""rated_speed_mps"": 1.75, ""top_landing_m"": 42}"\n')
    assert main(["registry", "import-devices", "nanshan-lift-1", str(devices)]) == 0
    assert count("devices") == 1 and count("audit_log") == 6
