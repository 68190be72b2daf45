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


def publish_fire(stack: ConsoleStack) -> str:
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
            violation="fire_unattended", state="raised", score=0.91, snapshot_sha256=sha,
            model="kitchen-fire@1",
            boxes=[BoundingBox(label="fire", score=0.91, x1=x1, y1=y1, x2=x2, y2=y2)]))
    finally:
        pub.close()
    return sha


def incidents_of(stack: ConsoleStack, who: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = stack.get(who, "/api/v1/incidents", limit=100).json()["items"]
    return items


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
    shot(page, artifacts, "site")

    page.get_by_test_id(f"device-row-{FRIDGE}").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("curve-temperature").locator("canvas")).to_be_visible()
    shot(page, artifacts, "device")

    page.goto(f"{console_stack.console}#/risk")
    expect(page.get_by_test_id(f"risk-row-{SITE}")).to_be_visible()
    shot(page, artifacts, "risk")

    page.goto(f"{console_stack.console}#/overview")
    expect(page.get_by_test_id("kpi-open")).to_be_visible()
    expect(page.get_by_test_id("by-jurisdiction").locator("canvas")).to_be_visible()
    expect(page.get_by_test_id("open-critical")).to_contain_text("明火无人看管")
    shot(page, artifacts, "overview")
    page.set_viewport_size(WALL)
    expect(page.get_by_test_id("kpi-open")).to_be_visible()
    root_px = page.evaluate("parseFloat(getComputedStyle(document.documentElement).fontSize)")
    assert root_px >= 30, f"the wall display does not scale up: {root_px}px"
    shot(page, artifacts, "overview-4k")
    assert errors.seen == []
