"""Issue 14 in a real browser: built-in alerting on a fresh server, the server's status pushed
to the page (an outage within 2 s), rules managed from the page, ranges in the URL, tags on rows.

Screenshots of these parts are taken only with PULSEBOARD_SCREENSHOTS=docs (`make screenshots`),
into that folder: a test run never rewrites files in the tree by default."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Page, expect

from backend.cli.embedded_redis import EmbeddedRedis
from tests.conftest import ROOT
from tests.helpers import wait_for
from tests.integration.test_builtin_alerts import ErrorTraffic

pytestmark = pytest.mark.e2e
SCREENSHOTS = os.environ.get("PULSEBOARD_SCREENSHOTS")  # a folder, relative to the repository


def screenshot(page: Page, name: str, *, min_events: int = 0, **kw) -> None:
    if not SCREENSHOTS:
        return
    if min_events:  # a few seconds of traffic, so the charts show a representative picture
        page.wait_for_function(
            "(n) => Number(document.querySelector('[data-testid=total-events]').innerText.replace(/\\D/g, '')) >= n",
            arg=min_events,
            timeout=30_000,
        )
    page.evaluate("window.scrollTo(0, 0)")  # a full-page capture of a scrolled page moves the sticky header
    folder = ROOT / SCREENSHOTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    page.screenshot(path=str(path), **kw)
    assert Path(path).stat().st_size > 10_000


def open_dashboard(page: Page, url: str) -> None:
    page.goto(url)
    expect(page.get_by_test_id("connection-status")).to_have_text("Connected", timeout=15_000)


def test_a_fresh_server_shows_an_error_rate_alert_within_15_s_of_a_burst(server_factory, r, page: Page):
    server = server_factory()  # defaults: built-in rules, no rule created, nothing learned
    traffic = ErrorTraffic(r, server.channel)
    traffic.error_share = 0.01
    traffic.start()
    try:
        open_dashboard(page, server.url)
        feed = page.get_by_test_id("alert-feed")
        wait_for(lambda: traffic.sent >= 20 * 50, timeout=30, message="20 s of 1% errors")
        expect(feed.get_by_test_id("open-alert-count")).to_have_text("0 open")
        traffic.error_share = 0.6
        item = feed.get_by_test_id("alert-item").filter(has_text="Error rate")
        expect(item).to_have_count(1, timeout=15_000)
        expect(item).to_have_attribute("data-state", "open")
        expect(item).to_contain_text("checkout error_rate over 1m")
        expect(item).to_contain_text("built-in rule")
        expect(page.get_by_test_id("header-open-alerts")).to_be_visible()
        screenshot(page, "dashboard-builtin-alert.png", min_events=600)
    finally:
        traffic.stop()


@pytest.fixture
def own_redis():
    with EmbeddedRedis() as server:
        yield server


def test_an_outage_shows_within_2_s_and_the_numbers_say_they_are_old(server_factory, own_redis, page: Page):
    server = server_factory(redis_url=own_redis.url)
    client = redis.Redis.from_url(own_redis.url)
    client.publish(server.channel, b'{"metric": "before", "value": {"ms": 5}}')
    open_dashboard(page, server.url)
    cards = page.get_by_test_id("stat-cards")
    expect(page.get_by_test_id("total-events")).not_to_have_text("—", timeout=10_000)
    expect(cards).to_have_attribute("data-stale", "false")
    expect(page.get_by_test_id("server-status")).to_have_count(0)
    own_redis.stop()
    expect(page.get_by_test_id("server-status")).to_contain_text("Redis down since", timeout=2_000)
    expect(page.get_by_test_id("connection-status")).to_have_text("Connected")  # the page's own link is fine
    expect(cards).to_have_attribute("data-stale", "true")
    expect(cards).to_contain_text("Redis down since")
    screenshot(page, "dashboard-outage.png")
    own_redis.start()
    expect(page.get_by_test_id("server-status")).to_have_count(0, timeout=15_000)
    expect(cards).to_have_attribute("data-stale", "false", timeout=15_000)
    client.close()


def test_a_rule_created_in_the_ui_fires_shows_on_the_chart_and_is_silenced(server_factory, r, page: Page):
    server = server_factory(env={"ANALYTICS_SETTLE_MS": "300"})
    traffic = ErrorTraffic(r, server.channel, metric="ui_checkout")
    traffic.start()
    try:
        open_dashboard(page, server.url)
        panel = page.get_by_test_id("rules-panel")
        expect(panel.locator("[data-testid=rule-row][data-builtin=true]")).to_have_count(3, timeout=10_000)
        # a mistake first: the API's message is shown, nothing is created
        page.get_by_test_id("rule-text").fill("ui_checkout: rate is high")
        page.get_by_test_id("rule-save").click()
        expect(page.get_by_test_id("rule-error")).to_contain_text("expected >, >=, < or <=")
        page.get_by_test_id("rule-name").fill("UI checkout flowing")
        page.get_by_test_id("rule-text").fill("ui_checkout: rate > 5")
        page.get_by_test_id("rule-severity").select_option("critical")
        page.get_by_test_id("rule-save").click()
        row = panel.get_by_test_id("rule-row").filter(has_text="UI checkout flowing")
        expect(row).to_have_count(1, timeout=10_000)
        expect(page.get_by_test_id("rule-error")).to_have_count(0)

        item = page.get_by_test_id("alert-item").filter(has_text="UI checkout flowing")
        expect(item).to_have_attribute("data-state", "open", timeout=15_000)
        expect(item).to_have_attribute("data-severity", "critical")
        page.get_by_test_id("window-select").select_option("60")
        expect(page.get_by_test_id("chart-throughput").get_by_test_id("chart-markers")).to_contain_text(
            "1 opened", timeout=10_000
        )
        screenshot(page, "dashboard-rules.png", min_events=600, full_page=True)

        row.get_by_test_id("rule-silence").select_option("3600")
        expect(row.get_by_test_id("rule-state")).to_contain_text("silenced until", timeout=10_000)
        expect(item).to_have_attribute("data-state", "closed", timeout=15_000)
        expect(item).to_contain_text("silenced until")
        stored = [x for x in server.get("/api/rules").json()["rules"] if x["name"] == "UI checkout flowing"]
        assert stored[0]["silenced_until"] is not None and stored[0]["severity"] == "critical"
        # and it stays quiet: no new alert from it while silenced
        assert not [
            a
            for a in server.get("/api/alerts?state=open").json()["alerts"]
            if a["rule_id"] == stored[0]["id"]
        ]
    finally:
        traffic.stop()


def test_the_ui_asks_for_the_api_key_and_uses_it(server_factory, page: Page):
    server = server_factory(env={"INGEST_API_KEY": "e2e-secret"})
    open_dashboard(page, server.url)
    page.get_by_test_id("rule-name").fill("Keyed rule")
    page.get_by_test_id("rule-text").fill("rate > 1000")
    page.get_by_test_id("rule-save").click()
    expect(page.get_by_test_id("rule-error")).to_contain_text("requires an API key")
    page.get_by_test_id("api-key-input").fill("e2e-secret")
    page.get_by_test_id("api-key-save").click()
    expect(page.get_by_test_id("rule-row").filter(has_text="Keyed rule")).to_have_count(1, timeout=10_000)
    assert page.evaluate("sessionStorage.getItem('pulseboard:api-key')") == "e2e-secret"
    assert [x for x in server.get("/api/rules").json()["rules"] if x["name"] == "Keyed rule"]


def ingest(server, events) -> None:
    resp = server.post("/api/ingest", json=events)
    assert resp.status_code == 202, resp.text


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + "Z"


def test_a_link_with_a_range_opens_that_range_and_dragging_zooms(live_server, page: Page):
    base = (math.floor(time.time()) - 900) // 60 * 60  # a quarter of an hour ago, on a minute
    old = [
        {
            "metric": "past",
            "value": {"ms": 10 + i % 5},
            "ts": base + 30 + i % 60,
            "tags": {"endpoint": "/api/orders"},
        }
        for i in range(120)
    ]
    ingest(live_server, old)
    ingest(live_server, [{"metric": "now", "value": {"ms": 1}} for _ in range(7)])
    link = f"{live_server.url}/?from={iso(base)}&to={iso(base + 120)}&tag=endpoint%3D%2Fapi%2Forders&log=1"
    page.goto(link)
    expect(page.get_by_test_id("connection-status")).to_have_text("Connected", timeout=15_000)
    expect(page.get_by_test_id("range-label")).not_to_have_text("Live")
    expect(page.get_by_test_id("total-events")).to_have_text("120", timeout=10_000)  # that range, not now
    expect(page.get_by_test_id("chart-tag")).to_have_value("endpoint=/api/orders")
    expect(page.get_by_test_id("latency-log")).to_be_checked()
    expect(page.get_by_test_id("chart-throughput")).not_to_contain_text("Waiting for data", timeout=10_000)
    assert "from=" in page.url and "tag=endpoint" in page.url
    screenshot(page, "dashboard-range.png")

    # drag across the throughput chart: a narrower absolute range, in the URL too
    before = page.url
    box = page.get_by_test_id("chart-throughput-box").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
    page.mouse.up()
    page.wait_for_function("(before) => window.location.href !== before", arg=before, timeout=5_000)
    zoomed = dict(x.split("=", 1) for x in page.url.split("?", 1)[1].split("&"))
    assert "from" in zoomed and "to" in zoomed
    page.get_by_test_id("range-live").click()
    expect(page.get_by_test_id("range-label")).to_have_text("Live")


def test_tags_show_on_log_rows_and_the_filter_matches_what_is_shown(live_server, page: Page):
    open_dashboard(page, live_server.url)
    ingest(
        live_server,
        [{"metric": "web", "tags": {"endpoint": "/api/checkout", "region": "eu"}} for _ in range(3)]
        + [{"metric": "web", "tags": {"endpoint": "/api/orders"}} for _ in range(4)],
    )
    log = page.get_by_test_id("event-log")
    expect(log.get_by_test_id("tag-chip").filter(has_text="endpoint=/api/checkout")).to_have_count(
        3, timeout=10_000
    )
    page.get_by_test_id("log-filter-text").fill("/api/checkout")
    rows = log.get_by_test_id("event-row")
    expect(rows).to_have_count(3)
    for i in range(3):
        expect(rows.nth(i).get_by_test_id("tag-chip").first).to_have_text("endpoint=/api/checkout")
    assert "q=%2Fapi%2Fcheckout" in page.url or "q=/api/checkout" in page.url


def test_on_a_phone_wide_tables_say_they_scroll(live_server, page: Page):
    page.set_viewport_size({"width": 390, "height": 844})
    ingest(live_server, [{"metric": "web", "value": {"ms": 5}} for _ in range(3)])
    open_dashboard(page, live_server.url)
    table = page.get_by_test_id("metric-table")
    expect(table.get_by_test_id("metric-row").first).to_be_visible(timeout=10_000)
    expect(page.get_by_test_id("scroll-hint").first).to_be_visible()
    # the metric name stays in view while the numbers scroll under it
    first = table.locator("th[scope=row]").first
    assert first.evaluate("el => getComputedStyle(el).position") == "sticky"
