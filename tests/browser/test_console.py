"""The console in headless Chromium against the running stack (issue 12).

Staff of district A sign in and keep the incident list open; a fridge of their site goes
above its limit and a kitchen camera reports an unattended fire with a snapshot, over
MQTT: both incidents appear in the list without a reload. The camera's incident shows
its snapshot with "SHA-256 ✓" (hashed in the browser) and its boxes, the fridge's the
curve with the limit; acknowledging adds the history entry. Staff of the sibling
district B see neither. No page logs a console error. Screenshots of every screen go
to ``GANZHI_TEST_ARTIFACTS`` (default ``var/test-artifacts/console``).
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    ViewportSize,
    expect,
    sync_playwright,
)

from ganzhi.contracts import (
    BoundingBox,
    Channel,
    Detection,
    DeviceClass,
    Evidence,
    Reading,
    Telemetry,
    new_id,
    utcnow,
)

from access_fixtures import PASSWORD
from console_stack import CAMERA, CHROMIUM, FRIDGE, LIMIT_C, SITE, ConsoleStack
from mqtt_device import MqttDevice
from waiting import wait_for

pytestmark = pytest.mark.e2e

LAPTOP: ViewportSize = {"width": 1366, "height": 768}
WALL: ViewportSize = {"width": 3840, "height": 2160}
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required"]
FIRE_BOX = (300, 120, 470, 300)


class Errors:
    """Console errors and uncaught exceptions of a page; ``allow``: expected messages
    (a 404 the page asked for on purpose)."""

    def __init__(self, page: Page) -> None:
        self.seen: list[str] = []
        self.allow: list[re.Pattern[str]] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.seen.append(f"pageerror: {exc}"))

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error" and not any(p.search(msg.text) for p in self.allow):
            self.seen.append(f"console: {msg.text} ({msg.location})")


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
    yield b
    b.close()


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    """What the first test found (incident ids) for the ones after it."""
    return {}


def sign_in(browser: Browser, stack: ConsoleStack, username: str,
            viewport: ViewportSize = LAPTOP) -> tuple[Page, Errors]:
    context = browser.new_context(viewport=viewport, locale="zh-CN",
                                  timezone_id="Asia/Shanghai")
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors = Errors(page)
    page.goto(stack.console)
    expect(page.get_by_test_id("login-form")).to_be_visible()
    page.get_by_test_id("username").fill(username)
    page.get_by_test_id("password").fill(PASSWORD)
    page.get_by_test_id("password").press("Enter")
    expect(page.get_by_test_id("incident-list")).to_be_visible()
    expect(page.get_by_test_id("user")).to_contain_text(username)
    return page, errors


def kitchen_jpeg() -> bytes:
    """A stand-in kitchen frame: a stove with a flame nobody watches, the box burnt in as
    the camera agent does."""
    img = np.full((360, 640, 3), (205, 210, 214), np.uint8)
    cv2.rectangle(img, (0, 250), (640, 360), (120, 130, 140), -1)  # counter
    cv2.rectangle(img, (280, 230), (490, 300), (60, 60, 60), -1)  # stove
    cv2.ellipse(img, (385, 200), (45, 70), 0, 0, 360, (0, 120, 255), -1)  # flame
    cv2.ellipse(img, (385, 215), (22, 40), 0, 0, 360, (0, 220, 255), -1)
    cv2.rectangle(img, (40, 60), (200, 240), (180, 150, 120), -1)  # shelf
    x1, y1, x2, y2 = FIRE_BOX
    cv2.rectangle(img, (x1, y1), (x2, y2), (0, 0, 255), 2)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return buf.tobytes()


def publish_fridge_excursion(stack: ConsoleStack) -> None:
    """Three normal readings, then 12 °C for longer than the rule's duration (device
    time, ten seconds apart, ending now)."""
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=6)
    pub = MqttDevice(stack.mqtt, SITE, FRIDGE)
    assert pub.wait_connected()
    try:
        for i in range(36):
            temp = 3.0 + 0.1 * (i % 3) if i < 6 else 12.0 + 0.2 * (i % 4)
            assert pub.publish(Channel.TELEMETRY, Telemetry(
                msg_id=new_id(), site_id=SITE, device_id=FRIDGE,
                ts=t0 + timedelta(seconds=10 * i), device_class=DeviceClass.COLD_STORE,
                readings=[Reading(metric="temperature", value=temp, unit="celsius")]))
    finally:
        pub.close()


def publish_fire(stack: ConsoleStack, violation: str = "fire_unattended") -> str:
    jpeg = kitchen_jpeg()
    sha = hashlib.sha256(jpeg).hexdigest()
    x1, y1, x2, y2 = FIRE_BOX
    pub = MqttDevice(stack.mqtt, SITE, CAMERA)
    assert pub.wait_connected()
    try:
        assert pub.publish(Channel.EVIDENCE, Evidence(
            msg_id=new_id(), site_id=SITE, device_id=CAMERA, ts=utcnow(), sha256=sha,
            data_b64=base64.b64encode(jpeg).decode()))
        assert pub.publish(Channel.DETECTION, Detection(
            msg_id=new_id(), site_id=SITE, device_id=CAMERA, ts=utcnow(),
            violation=violation, state="raised", score=0.91, snapshot_sha256=sha,
            model="kitchen-fire@1",
            boxes=[BoundingBox(label="fire", score=0.91, x1=x1, y1=y1, x2=x2, y2=y2)]))
    finally:
        pub.close()
    return sha


def incidents_of(stack: ConsoleStack, who: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = stack.get(who, "/api/v1/incidents", limit=100).json()["items"]
    return items


def incident_of(stack: ConsoleStack, rule_id: str, publish: bool = False
                ) -> dict[str, Any] | None:
    """District A's incident of ``rule_id``; ``publish``: the camera reports the violation
    first (once)."""
    if publish and rule_id not in PUBLISHED:
        PUBLISHED.add(rule_id)
        publish_fire(stack, rule_id.removeprefix("vision."))
    return next((i for i in incidents_of(stack, "a-staff") if i["rule_id"] == rule_id), None)


PUBLISHED: set[str] = set()


def pump_until(page: Page, cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Wait for what the page's event handlers collect (Playwright's sync API delivers
    events only while it is called: time.sleep would starve them)."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting for {what}"
        page.wait_for_timeout(200)


def fits(page: Page) -> None:
    """Nothing pushes the page wider than its viewport (tables scroll in their card)."""
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page is {widths[0]} px wide in a {widths[1]} px viewport"


def shot(page: Page, artifacts: Path, name: str) -> None:
    page.wait_for_timeout(300)  # charts finish drawing
    page.screenshot(path=str(artifacts / f"{name}.png"))


def test_live_incident_detail_and_acknowledge(console_stack: ConsoleStack, browser: Browser,
                                              artifacts: Path, state: dict[str, Any]) -> None:
    stack = console_stack
    page, errors = sign_in(browser, stack, "a-staff")
    expect(page.get_by_test_id("live-state")).to_have_attribute("data-state", "open")
    expect(page.get_by_test_id("empty")).to_be_visible()
    page.evaluate("window.__notReloaded = true")
    page.get_by_test_id("filter-q").click()  # a user gesture: the beep may play

    publish_fridge_excursion(stack)
    sha = publish_fire(stack)

    def found() -> dict[str, dict[str, Any]]:
        by_family = {i["rule_id"].split(".")[0]: i for i in incidents_of(stack, "a-staff")
                     if i["rule_id"]}
        return by_family if {"cold_chain", "vision"} <= by_family.keys() else {}

    by_family: Callable[[], dict[str, dict[str, Any]]] = found
    incidents = wait_for(by_family, 90, "both incidents in the API", interval=0.5)
    fridge, fire = incidents["cold_chain"], incidents["vision"]
    state.update(fridge=fridge["id"], fire=fire["id"])

    # Both rows arrive over the live stream, in the page opened before they existed.
    fire_row = page.get_by_test_id(f"incident-row-{fire['id']}")
    fridge_row = page.get_by_test_id(f"incident-row-{fridge['id']}")
    expect(fire_row).to_be_visible(timeout=30_000)
    expect(fridge_row).to_be_visible(timeout=30_000)
    assert page.evaluate("window.__notReloaded") is True
    expect(fire_row).to_have_class(re.compile(r"\bfresh\b"))
    expect(fire_row).to_contain_text("明火无人看管")
    expect(page.get_by_test_id("incident-list")).to_have_attribute("aria-live", "polite")
    shot(page, artifacts, "list")

    # Keyboard: the row takes focus and Enter opens it.
    fire_row.focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(rf"#/incidents/{fire['id']}$"))
    expect(page.get_by_test_id("sha-check")).to_contain_text("SHA-256 ✓", timeout=20_000)
    expect(page.get_by_test_id("snapshot-img")).to_be_visible()
    expect(page.get_by_test_id("snapshot-boxes").locator("rect")).to_have_count(1)
    assert sha in page.get_by_test_id("alert-values").first.inner_text()
    shot(page, artifacts, "detail-camera")

    # The fridge: the curve with its limit; acknowledge it.
    page.goto(f"{stack.console}#/incidents/{fridge['id']}")
    curve = page.get_by_test_id("curve")
    expect(curve.locator("canvas")).to_be_visible()
    expect(curve).to_have_attribute("data-limit", re.compile(rf"^{LIMIT_C:g}(\.0)?$"))
    assert int(curve.get_attribute("data-points") or 0) > 0
    expect(curve).to_contain_text(f"限值 {LIMIT_C:g}")
    page.get_by_test_id("ack-note").fill("已电话通知店长检查冷藏库")
    page.get_by_test_id("ack").click()
    expect(page.locator('[data-testid="history"] li[data-action="acknowledged"]')).to_be_visible()
    expect(page.get_by_test_id("acknowledged")).to_contain_text("a-staff")
    shot(page, artifacts, "detail-fridge")
    assert errors.seen == []


def test_sibling_district_sees_nothing(console_stack: ConsoleStack, browser: Browser,
                                       state: dict[str, Any]) -> None:
    assert state, "the first test found no incidents"
    page, errors = sign_in(browser, console_stack, "b-staff")
    page.goto(f"{console_stack.console}#/incidents?status=")
    expect(page.get_by_test_id("empty")).to_be_visible()
    for incident_id in (state["fridge"], state["fire"]):
        expect(page.get_by_test_id(f"incident-row-{incident_id}")).to_have_count(0)
    # Chromium logs the 404 the detail page asks for; nothing else may appear.
    errors.allow.append(re.compile(r"status of 404"))
    page.goto(f"{console_stack.console}#/incidents/{state['fridge']}")
    expect(page.get_by_test_id("not-found")).to_be_visible()
    expect(page.get_by_test_id("not-found")).to_contain_text("未找到")
    # English on request, kept for the next visit.
    page.get_by_test_id("language").select_option("en")
    expect(page.get_by_test_id("not-found")).to_contain_text("not found")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.reload()
    expect(page.get_by_test_id("not-found")).to_contain_text("not found")
    assert errors.seen == []


def test_site_device_overview_and_risk_screens(console_stack: ConsoleStack, browser: Browser,
                                               artifacts: Path, state: dict[str, Any]) -> None:
    page, errors = sign_in(browser, console_stack, "a-staff")
    page.goto(f"{console_stack.console}#/sites/{SITE}")
    expect(page.get_by_test_id(f"device-row-{FRIDGE}")).to_be_visible()
    expect(page.get_by_test_id(f"device-row-{CAMERA}")).to_be_visible()
    expect(page.get_by_test_id("trend").locator("canvas")).to_be_visible()
    expect(page.get_by_test_id("site-risk")).to_be_visible()
    expect(page.get_by_test_id("site-category")).to_have_text("餐饮店")
    expect(page.get_by_test_id(f"device-row-{CAMERA}")).to_contain_text("后厨摄像头")
    fits(page)
    shot(page, artifacts, "site")

    page.get_by_test_id(f"device-row-{FRIDGE}").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("curve-temperature").locator("canvas")).to_be_visible()
    expect(page.get_by_test_id("device-class")).to_have_text("冷库传感器")
    fits(page)
    shot(page, artifacts, "device")

    # An unknown device of a known site: the device is missing, not the site.
    errors.allow.append(re.compile(r"status of 404"))
    page.goto(f"{console_stack.console}#/sites/{SITE}/devices/no-such-device")
    expect(page.get_by_test_id("not-found")).to_contain_text("未找到此设备")

    page.goto(f"{console_stack.console}#/risk")
    expect(page.get_by_test_id(f"risk-row-{SITE}")).to_be_visible()
    shot(page, artifacts, "risk")

    page.goto(f"{console_stack.console}#/overview")
    expect(page.get_by_test_id("kpi-open")).to_be_visible()
    expect(page.get_by_test_id("by-jurisdiction").locator("canvas")).to_be_visible()
    expect(page.get_by_test_id("open-critical")).to_contain_text("明火无人看管")
    # The feed starts with the latest incidents, before any live event.
    feed = page.get_by_test_id("live-feed")
    expect(feed.locator('li[data-action="opened"]').first).to_be_visible()
    assert feed.locator('li[data-action="opened"]').count() >= 2
    expect(feed).to_contain_text("明火无人看管")
    fits(page)
    shot(page, artifacts, "overview")
    page.set_viewport_size(WALL)
    expect(page.get_by_test_id("kpi-open")).to_be_visible()
    root_px = page.evaluate("parseFloat(getComputedStyle(document.documentElement).fontSize)")
    assert root_px >= 30, f"the wall display does not scale up: {root_px}px"
    fits(page)
    shot(page, artifacts, "overview-4k")

    # English: rule names, registry words, the device page's message.
    page.set_viewport_size(LAPTOP)
    page.get_by_test_id("language").select_option("en")
    expect(page.get_by_test_id("open-critical")).to_contain_text("Open flame unattended")
    page.goto(f"{console_stack.console}#/sites/{SITE}/devices/no-such-device")
    expect(page.get_by_test_id("not-found")).to_contain_text("Device not found")
    page.goto(f"{console_stack.console}#/sites/{SITE}")
    expect(page.get_by_test_id("site-category")).to_have_text("Restaurant")
    expect(page.get_by_test_id(f"device-row-{FRIDGE}")).to_contain_text("Cold store sensor")
    page.goto(f"{console_stack.console}#/incidents/{state['fridge']}")
    expect(page.get_by_test_id("incident-title")).to_contain_text("Cold store above its limit")
    expect(page.get_by_test_id("alert-values").first).to_contain_text("limit")
    expect(page.get_by_test_id("notify-state")).not_to_have_text(re.compile(r"^(held|notified)"))
    page.get_by_test_id("language").select_option("zh-CN")
    assert errors.seen == []


def test_long_text_required_fields_and_words(console_stack: ConsoleStack, browser: Browser,
                                             artifacts: Path, state: dict[str, Any]) -> None:
    """A comment of the longest kind the API takes, without a space, wraps: the page stays
    as wide as the viewport. An empty required field says so; clue states, deliveries and
    their events are words."""
    stack = console_stack
    fridge = state["fridge"]
    long_text = "长" * 40 + "x" * (2000 - 40)
    r = stack.post("a-staff", f"/api/v1/incidents/{fridge}/comments", {"text": long_text})
    assert r.status_code == 200, r.text
    r = stack.post("a-staff", f"/api/v1/incidents/{fridge}/assign", {"assignee": "y" * 100})
    assert r.status_code == 200, r.text
    page, errors = sign_in(browser, stack, "a-staff")
    page.goto(f"{stack.console}#/incidents/{fridge}")
    expect(page.locator('[data-testid="history"] li[data-action="commented"]')).to_be_visible()
    expect(page.get_by_test_id("history")).to_contain_text("x" * 100)
    fits(page)
    expect(page.get_by_test_id("notify-state")).to_have_text(re.compile(r"^(已推送任务系统|暂缓)"))
    events = page.get_by_test_id("delivery-event")
    expect(events.first).to_have_text(re.compile(r"^创建 · 序号 0$"))
    expect(page.get_by_test_id("delivery-status").first).to_have_text(
        re.compile(r"^(已送达|待发送|发送失败|已丢弃)"))
    shot(page, artifacts, "detail-long-text")

    # Empty required fields: a message next to the field, nothing sent.
    posts: list[str] = []
    page.on("request", lambda req: posts.append(req.url) if req.method == "POST" else None)
    for action, field in (("comment", "评论"), ("assign", "处理人"), ("resolve", "原因")):
        page.get_by_test_id(action).click()
        msg = page.get_by_test_id(f"required-{action}")
        expect(msg).to_be_visible()
        expect(msg).to_contain_text(field)
    page.get_by_test_id("comment-text").fill("   ")
    page.get_by_test_id("comment").click()
    expect(page.get_by_test_id("required-comment")).to_be_visible()
    assert not [u for u in posts if "/incidents/" in u], posts
    page.get_by_test_id("comment-text").fill("已复核")
    page.get_by_test_id("comment").click()
    expect(page.get_by_test_id("required-comment")).to_have_count(0)
    expect(page.get_by_test_id("history")).to_contain_text("已复核")
    assert errors.seen == []


def test_sign_out(console_stack: ConsoleStack, browser: Browser, state: dict[str, Any]) -> None:
    """Signing out lands on the sign-in page with the refresh token gone and the stream
    closed; Back shows no incident data."""
    page, errors = sign_in(browser, console_stack, "a-staff")
    expect(page.get_by_test_id("live-state")).to_have_attribute("data-state", "open")
    page.goto(f"{console_stack.console}#/incidents/{state['fire']}")
    expect(page.get_by_test_id("incident-title")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('ganzhi.refresh')")
    ended: list[str] = []
    page.on("requestfailed", lambda req: ended.append(req.url) if "/api/v1/live" in req.url
            else None)
    page.on("requestfinished", lambda req: ended.append(req.url) if "/api/v1/live" in req.url
            else None)
    live_after: list[str] = []

    page.get_by_test_id("logout").click()
    expect(page.get_by_test_id("login-form")).to_be_visible()
    page.on("request", lambda req: live_after.append(req.url) if "/api/v1/" in req.url
            and "/auth/" not in req.url else None)
    assert page.evaluate("sessionStorage.getItem('ganzhi.refresh')") is None
    pump_until(page, lambda: bool(ended), 5, "the live stream to close")
    expect(page.get_by_test_id("live-state")).to_have_count(0)

    page.go_back()
    expect(page.get_by_test_id("login-form")).to_be_visible()
    expect(page.get_by_test_id("incident-title")).to_have_count(0)
    expect(page.get_by_test_id("incident-list")).to_have_count(0)
    page.go_back()
    expect(page.get_by_test_id("login-form")).to_be_visible()
    expect(page.get_by_test_id("incident-list")).to_have_count(0)
    page.wait_for_timeout(500)
    assert live_after == [], live_after
    assert errors.seen == []


def test_live_after_token_expiry(console_stack: ConsoleStack, browser: Browser) -> None:
    """The stack's access tokens live 60 s; the server ends a stream within a minute after
    its token expired. The console refreshes, reconnects with Last-Event-ID and the list
    still receives a new incident (about 65 s)."""
    stack = console_stack
    page, errors = sign_in(browser, stack, "a-staff")
    live_state = page.get_by_test_id("live-state")
    expect(live_state).to_have_attribute("data-state", "open")
    streams: list[dict[str, str]] = []
    refreshes: list[int] = []
    page.on("request", lambda req: streams.append(req.headers)
            if req.url.endswith("/api/v1/live") else None)
    page.on("request", lambda req: refreshes.append(len(streams))
            if req.url.endswith("/api/v1/auth/refresh") else None)
    # One event seen on this stream, so the reconnect has an id to resume after.
    rodent = wait_for(lambda: incident_of(stack, "vision.rodent", publish=True), 60,
                      "the rodent incident in the API", interval=0.5)
    expect(page.get_by_test_id(f"incident-row-{rodent['id']}")).to_be_visible(timeout=20_000)

    pump_until(page, lambda: bool(streams), 100, "the stream to end and reconnect")
    assert refreshes and refreshes[0] == 0, "no refresh before the reconnect"
    last_id = streams[0].get("last-event-id", "")
    assert re.fullmatch(r"\d+", last_id), f"Last-Event-ID sent as {last_id!r}"
    expect(live_state).to_have_attribute("data-state", "open", timeout=15_000)

    smoking = wait_for(lambda: incident_of(stack, "vision.smoking", publish=True), 60,
                       "the smoking incident in the API", interval=0.5)
    expect(page.get_by_test_id(f"incident-row-{smoking['id']}")).to_be_visible(timeout=20_000)
    assert errors.seen == []
