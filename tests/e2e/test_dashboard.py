"""The dashboard in a real browser, against the real server, worker and Redis."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from pathlib import Path

import orjson
import pytest
import redis
import requests
from playwright.sync_api import Page, expect

from backend.cli.procs import generator_command, pulseboard_command, stop
from tests.conftest import ROOT, default_layout

pytestmark = pytest.mark.e2e


@pytest.fixture
def server_factory(server_factory):
    # The dashboard's reads and aggregate pushes go through the read process, as on a multi-core
    # machine. (The alerting pages' tests read inline: each read process costs a start's CPU.)
    return default_layout(server_factory)


def ingest(server, events) -> None:
    resp = requests.post(server.url + "/api/ingest", json=events, timeout=10)
    assert resp.status_code == 202, resp.text


def total_events(page: Page) -> int:
    return int(re.sub(r"[^\d]", "", page.get_by_test_id("total-events").inner_text()) or 0)


def open_dashboard(page: Page, url: str) -> None:
    page.goto(url)
    expect(page.get_by_test_id("connection-status")).to_have_text("Connected", timeout=15_000)


def test_live_counters_log_and_window_selector(live_server, page: Page):
    now = time.time()
    # 300 events two minutes ago, 5 now: the 1 h window sees 305, the 10 s window only 5.
    ingest(live_server, [{"metric": "old", "value": {"ms": 100 + i}, "ts": now - 120} for i in range(300)])
    marker = uuid.uuid4().hex[:8]
    open_dashboard(page, live_server.url)
    page.get_by_test_id("window-select").select_option("3600")
    ingest(
        live_server, [{"metric": "fresh", "value": {"ms": 5}, "source": f"src-{marker}"} for _ in range(5)]
    )

    expect(page.get_by_test_id("total-events")).to_have_text("305", timeout=10_000)
    expect(page.get_by_test_id("event-log")).to_contain_text(f"src-{marker}", timeout=10_000)

    page.get_by_test_id("window-select").select_option("10")
    expect(page.get_by_test_id("total-events")).to_have_text("5", timeout=10_000)
    page.reload()
    expect(page.get_by_test_id("window-select")).to_have_value("10")  # persisted


def test_counters_rise_while_events_flow(live_server, page: Page):
    open_dashboard(page, live_server.url)
    page.get_by_test_id("window-select").select_option("60")
    ingest(live_server, [{"metric": "rise"} for _ in range(10)])
    expect(page.get_by_test_id("total-events")).to_have_text("10", timeout=10_000)
    ingest(live_server, [{"metric": "rise"} for _ in range(15)])
    expect(page.get_by_test_id("total-events")).to_have_text("25", timeout=10_000)
    assert page.get_by_test_id("event-row").count() == 25


def test_xss_payloads_render_as_text(live_server, page: Page):
    open_dashboard(page, live_server.url)
    payload = '<img src=x onerror="window.__xss=1">'
    script = "<script>window.__xss=2</script>"
    ingest(
        live_server, [{"metric": "xss", "source": payload, "value": {"note": script}, "tags": {"t": payload}}]
    )
    log = page.get_by_test_id("event-log")
    expect(log).to_contain_text(payload, timeout=10_000)
    expect(log).to_contain_text(script)
    assert log.locator("img").count() == 0
    assert log.locator("script").count() == 0
    assert page.evaluate("window.__xss") is None


def test_theme_toggle_persists_across_reload(live_server, page: Page):
    open_dashboard(page, live_server.url)
    html = page.locator("html")
    before = html.get_attribute("data-theme")
    assert before in ("light", "dark")
    page.get_by_test_id("theme-toggle").click()
    after = "dark" if before == "light" else "light"
    expect(html).to_have_attribute("data-theme", after)
    page.reload()
    expect(html).to_have_attribute("data-theme", after)


def test_web_node_restart_shows_reconnecting_then_recovers_missed_events(server_factory, page: Page):
    # Worker and web node as separate processes (the scale-out topology), so events published
    # while the web node is down are still stored, and the dashboard must fetch them on reconnect.
    mq = {"MESSAGE_QUEUE": "true"}
    server_factory(command="worker", env=mq)
    web = server_factory(args=("--no-worker",), env=mq)
    open_dashboard(page, web.url)
    ingest(web, [{"metric": "before", "source": "before-restart"}])
    expect(page.get_by_test_id("event-log")).to_contain_text("before-restart", timeout=10_000)

    web.process.terminate()
    web.process.wait(timeout=10)
    expect(page.get_by_test_id("connection-status")).to_contain_text("Reconnecting", timeout=15_000)
    r = redis.Redis.from_url(web.redis_url)
    for i in range(3):
        r.publish(web.channel, orjson.dumps({"metric": "during", "source": f"during-outage-{i}"}))
    r.close()

    restarted = subprocess.Popen(
        pulseboard_command("serve", "--port", str(web.port), "--no-worker"),
        cwd=ROOT,
        env=web.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        expect(page.get_by_test_id("connection-status")).to_have_text("Connected", timeout=30_000)
        for i in range(3):
            expect(page.get_by_test_id("event-log")).to_contain_text(f"during-outage-{i}", timeout=10_000)
    finally:
        stop(restarted)


def test_screenshots_for_the_readme(server_factory, page: Page, screenshot_dir: Path):
    """Light and dark screenshots of the dashboard with the generator running, for the README."""
    server = server_factory()
    generator = subprocess.Popen(
        generator_command(server.redis_url, "--rate", "300", "--seed", "7"),
        cwd=ROOT,
        env=server.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        open_dashboard(page, server.url)
        page.get_by_test_id("window-select").select_option("60")
        expect(page.get_by_test_id("event-row").first).to_be_visible(timeout=15_000)
        page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=event-row]').length >= 50", timeout=15_000
        )
        # A few seconds of traffic, so the charts show a representative picture.
        page.wait_for_function(
            "() => Number(document.querySelector('[data-testid=total-events]').innerText.replace(/\\D/g, '')) >= 1000",
            timeout=20_000,
        )
        for theme in ("light", "dark"):
            if page.locator("html").get_attribute("data-theme") != theme:
                page.get_by_test_id("theme-toggle").click()
            expect(page.locator("html")).to_have_attribute("data-theme", theme)
            path = screenshot_dir / f"dashboard-{theme}.png"
            page.screenshot(path=str(path), full_page=True)
            assert path.stat().st_size > 20_000
        assert total_events(page) > 0
    finally:
        stop(generator)


def start_generator(server, rate: int = 300) -> subprocess.Popen:
    # No incident bursts: the alerts these tests look at come from their own rules only.
    return subprocess.Popen(
        generator_command(server.redis_url, "--rate", str(rate), "--seed", "7", "--burst-every", "0"),
        cwd=ROOT,
        env=server.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def add_rule(server, rule: str, name: str) -> dict:
    resp = server.post("/api/rules", json={"rule": rule, "name": name})
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_rule_alert_appears_live_and_is_acknowledged(server_factory, page: Page):
    """A rule that fires at once on the generator's traffic: its alert must reach the open page
    over the socket, with its severity, and Acknowledge must stick (also across a reload)."""
    server = server_factory(env={"ANALYTICS_SETTLE_MS": "300"})
    generator = start_generator(server)
    try:
        open_dashboard(page, server.url)
        feed = page.get_by_test_id("alert-feed")
        expect(feed.get_by_test_id("open-alert-count")).to_have_text("0 open", timeout=10_000)
        expect(feed).to_contain_text("No alerts")
        # The rule comes after the page connected, so the alert can only arrive as a push.
        add_rule(server, "http_request: rate > 1 for 0s severity critical", "E2E traffic")

        item = feed.get_by_test_id("alert-item").filter(has_text="E2E traffic")
        expect(item).to_have_count(1, timeout=15_000)
        expect(item).to_have_attribute("data-state", "open")
        expect(item).to_have_attribute("data-severity", "critical")
        expect(item).to_have_class(re.compile(r"\bsev-critical\b"))
        expect(item.get_by_test_id("alert-severity")).to_have_text("critical")
        expect(feed.get_by_test_id("open-alert-count")).to_have_text("1 open")
        expect(page.get_by_test_id("header-open-alerts")).to_have_text("1 open alert · 1 critical")

        item.get_by_role("button", name="Acknowledge").click()
        expect(item.get_by_test_id("alert-acked")).to_be_visible(timeout=10_000)
        expect(item.get_by_role("button", name="Acknowledge")).to_have_count(0)
        expect(item.get_by_role("alert")).to_have_count(0)  # no inline error
        [stored] = server.get("/api/alerts?state=open").json()["alerts"]
        assert stored["acked"] is True and stored["severity"] == "critical"

        page.reload()  # the list the page loads on connect has it acknowledged too
        item = page.get_by_test_id("alert-item").filter(has_text="E2E traffic")
        expect(item.get_by_test_id("alert-acked")).to_be_visible(timeout=15_000)
        expect(item).to_have_attribute("data-state", "open")
    finally:
        stop(generator)


def test_acknowledge_without_the_api_key_shows_why(server_factory, page: Page):
    server = server_factory(env={"ANALYTICS_SETTLE_MS": "300", "INGEST_API_KEY": "e2e-secret"})
    generator = start_generator(server)
    try:
        resp = server.post(
            "/api/rules",
            json={"rule": "http_request: rate > 1 severity warning", "name": "Keyed"},
            headers={"X-API-Key": "e2e-secret"},
        )
        assert resp.status_code == 201, resp.text
        open_dashboard(page, server.url)
        item = page.get_by_test_id("alert-item").filter(has_text="Keyed")
        expect(item).to_have_attribute("data-severity", "warning", timeout=15_000)
        item.get_by_role("button", name="Acknowledge").click()
        expect(item.get_by_role("alert")).to_contain_text("requires an API key", timeout=10_000)
        expect(item.get_by_test_id("alert-acked")).to_have_count(0)
    finally:
        stop(generator)


def test_screenshot_of_the_alert_feed_for_the_docs(server_factory, page: Page, screenshot_dir: Path):
    """docs/dashboard-alert.png: the top of the dashboard with open critical and warning alerts,
    a closed one, trend arrows on the counters; light theme."""
    server = server_factory(env={"ANALYTICS_SETTLE_MS": "300"})
    generator = start_generator(server)
    try:
        open_dashboard(page, server.url)
        if page.locator("html").get_attribute("data-theme") != "light":
            page.get_by_test_id("theme-toggle").click()
        expect(page.locator("html")).to_have_attribute("data-theme", "light")
        page.get_by_test_id("window-select").select_option("60")
        # Thresholds far from the generator's levels (http p95 ~380 ms, latency p95 ~200 ms,
        # orders ~6/s at 300 events/s), so the picture doesn't depend on luck.
        add_rule(server, "p95(http_request.ms) > 100 for 2s severity critical", "HTTP p95 above 100 ms")
        add_rule(server, "p95(latency.ms) > 50 for 2s", "Service latency p95 above 50 ms")
        gone = add_rule(server, "orders: rate > 0.5", "Orders flowing")
        feed = page.get_by_test_id("alert-feed")
        expect(feed.locator("[data-testid=alert-item][data-state=open]")).to_have_count(3, timeout=20_000)
        # Deleting a rule closes its alert: the feed then shows a closed (grey) one too.
        resp = requests.delete(
            f"{server.url}/api/rules/{gone['id']}", headers={"X-Requested-With": "test"}, timeout=5
        )
        assert resp.status_code == 200, resp.text
        expect(feed.locator("[data-testid=alert-item][data-state=closed]")).to_have_count(1, timeout=15_000)
        expect(feed.locator("[data-state=open][data-severity=critical]")).to_have_count(1)
        expect(feed.locator("[data-state=open][data-severity=warning]")).to_have_count(1)
        expect(page.get_by_test_id("metric-table").get_by_test_id("trend").first).to_be_visible(
            timeout=15_000
        )
        page.wait_for_function(
            "() => Number(document.querySelector('[data-testid=total-events]').innerText.replace(/\\D/g, '')) >= 1000",
            timeout=20_000,
        )
        page.evaluate("window.scrollTo(0, 0)")
        path = screenshot_dir / "dashboard-alert.png"
        page.screenshot(path=str(path))
        assert path.stat().st_size > 20_000
    finally:
        stop(generator)
