"""The operators' status page (/admin/status/): staff only, renders with nothing measured yet,
and, in a real headless Chromium against the live platform, shows what the platform is doing:
the mode an operator forced and why, a tenant's backlog and lag, the pools' workers, a dead
letter that its button replays. The browser test keeps its screenshot (docs/status-page.png when
LEADFLOW_UPDATE_SCREENSHOT=1)."""

import contextlib
import os
import shutil
import uuid
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from apps.control.models import Policy
from apps.crm.models import DeadLetter
from apps.status.page import CHART_HEIGHT, CHART_WIDTH, forecast_chart, lag_chart
from leadflow import redis_keys
from leadflow.redis_conn import get_redis
from tests.factories import lead_make
from tests.live.api import auth, wait_until

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def test_status_page_is_for_staff_only(client):
    response = client.get("/admin/status/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.django_db
def test_status_page_renders_before_the_controller_measured_anything(admin_client):
    response = admin_client.get("/admin/status/")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="lf-mode"' in body
    for card in ("lf-tiers", "lf-pools", "lf-laggiest", "lf-tenants", "lf-breakers", "lf-events"):
        assert f'id="{card}"' in body, card
    assert "AI provider" in body


@pytest.mark.django_db
def test_admin_home_links_to_the_status_page(admin_client):
    assert 'href="/admin/status/"' in admin_client.get("/admin/").content.decode()


def test_lag_chart_spans_15_minutes_with_the_slo_line():
    now = 1_800_000_000.0
    samples = [
        {"at": now - 900, "tiers": {"critical": {"lag": 0.0}}},
        {"at": now - 450, "tiers": {"critical": {"lag": 10.0}}},
        {"at": now, "tiers": {"critical": {"lag": 2.0}}},
    ]
    chart = lag_chart(samples, "critical", now)
    points = [tuple(map(float, p.split(","))) for p in chart.points.split()]
    assert [x for x, _ in points] == [0.0, CHART_WIDTH / 2, CHART_WIDTH]
    assert points[0][1] == CHART_HEIGHT  # no lag: the bottom
    assert points[1][1] == pytest.approx(CHART_HEIGHT - 10 / 11 * CHART_HEIGHT, abs=0.1)
    assert chart.slo_y == pytest.approx(CHART_HEIGHT - 5 / 11 * CHART_HEIGHT, abs=0.1)
    assert lag_chart(samples, "low", now).slo_y is None  # LOW has no SLO


def test_forecast_chart_draws_each_forecast_at_the_moment_it_was_made_for():
    now = 1_800_000_000.0
    samples = [
        {"at": now - 900, "tiers": {"normal": {"arrivals": 100.0, "forecast_5m": 150.0}}},
        {"at": now - 600, "tiers": {"normal": {"arrivals": 120.0, "forecast_5m": 180.0}}},
        {"at": now - 300, "tiers": {"normal": {"arrivals": 150.0, "forecast_5m": 200.0}}},
        {"at": now, "tiers": {"normal": {"arrivals": 190.0, "forecast_5m": 230.0}}},
    ]
    chart = forecast_chart(samples, "normal", now)
    actual = [tuple(map(float, p.split(","))) for p in chart.points.split()]
    forecast = [tuple(map(float, p.split(","))) for p in chart.forecast_points.split()]
    assert [x for x, _ in actual] == [0.0, CHART_WIDTH / 3, 2 * CHART_WIDTH / 3, CHART_WIDTH]
    # Forecasts made 15, 10 and 5 minutes ago, for 10 and 5 minutes ago and now; the one
    # made now is for a moment still to come, off the chart.
    assert [x for x, _ in forecast] == [CHART_WIDTH / 3, 2 * CHART_WIDTH / 3, CHART_WIDTH]
    assert chart.top == pytest.approx(200.0 * 1.1)  # the highest drawn: 200 forecast for now
    assert forecast[-1][1] == pytest.approx(CHART_HEIGHT - 200 / 220 * CHART_HEIGHT, abs=0.1)
    assert actual[-1][1] == pytest.approx(CHART_HEIGHT - 190 / 220 * CHART_HEIGHT, abs=0.1)


@pytest.mark.django_db
def test_the_status_page_shows_the_forecast_and_the_replicas_needed(admin_client):
    page = admin_client.get("/admin/status/").content.decode()
    assert 'id="lf-forecast"' in page and 'id="lf-replicas"' in page
    assert "pool A" in page


# --- in a browser, against the live platform ---


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Chromium not installed (Debian: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-dev-shm-usage",
        "--window-size=1400,1300",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    # Debian's chromedriver, given by path: Selenium Manager never downloads one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def login(driver, base_url: str, username: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base_url}/admin/login/?next=/admin/")
    driver.find_element(By.ID, "id_username").send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_until(lambda: "/admin/login/" not in driver.current_url, timeout=10, message="login")


def force_mode(driver, base_url: str, mode: str) -> None:
    """As an operator does: the overload policy page, forced mode, save."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(f"{base_url}/admin/control/policy/")  # redirects to the one row's form
    Select(driver.find_element(By.ID, "id_forced_mode")).select_by_value(mode)
    driver.find_element(By.NAME, "_save").click()
    wait_until(
        lambda: "changed successfully" in driver.page_source, timeout=10, message="policy saved"
    )


def dead_letter(tenant) -> DeadLetter:
    """A lead that gave up at the CRM stage (as pool C leaves one after its retries)."""
    lead = lead_make(
        tenant,
        f"{uuid.uuid4().hex[:8]}@analytical.io",
        tier="critical",
        status="dead_lettered",
        is_qualified=None,
    )
    return DeadLetter.objects.create(
        tenant=tenant,
        lead=lead,
        stage="crm",
        error="CrmUnavailable: the CRM answered 503 Service Unavailable",
        attempts=4,
    )


def test_status_page_shows_the_live_platform_in_a_browser(
    browser, live_stack, api, make_tenant, tmp_path
):
    from selenium.webdriver.common.by import By

    base = live_stack.operator_url  # the admin is on the operator listener
    password = uuid.uuid4().hex
    get_user_model().objects.create_superuser("ops", "ops@example.com", password)
    tenant, key = make_tenant("status", critical_capacity=40)
    letter = dead_letter(tenant)
    login(browser, base, "ops", password)

    force_mode(browser, base, "thin")  # THIN pauses LOW: the tenant's low leads will wait
    try:
        wait_until(
            lambda: get_redis().get(redis_keys.MODE_KEY) == b"thin", timeout=10, message="applied"
        )
        for index in range(6):
            body = {"email": f"lead{index}-{uuid.uuid4().hex[:6]}@analytical.io", "priority": "low"}
            assert api.post("/api/v1/leads", json=body, headers=auth(key)).status_code == 202

        def showing() -> bool:
            browser.get(f"{base}/admin/status/")
            mode = browser.find_element(By.ID, "lf-mode").get_attribute("data-mode")
            rows = browser.find_elements(
                By.CSS_SELECTOR, f"#lf-tenants tr[data-tenant='{tenant.id}']"
            )
            cells = rows[0].find_elements(By.TAG_NAME, "td") if rows else []
            low = browser.find_element(By.CSS_SELECTOR, "#lf-tiers tr[data-tier='low']")
            # the tier's figures are the controller's last tick; the tenant's are read live
            waiting = int(low.find_element(By.CLASS_NAME, "lf-backlog").text.replace(",", ""))
            laggiest = browser.find_elements(
                By.CSS_SELECTOR, f"#lf-laggiest tr[data-tenant='{tenant.id}'][data-tier='low']"
            )
            return (
                mode == "thin"
                and len(cells) > 3
                and cells[3].text == "6"
                and waiting >= 6
                and len(laggiest) == 1
            )

        wait_until(showing, timeout=20, interval=0.5, message="the status page shows it live")

        why = browser.find_element(By.ID, "lf-why").text
        assert "forced by ops" in why
        row = browser.find_element(By.CSS_SELECTOR, f"#lf-tenants tr[data-tenant='{tenant.id}']")
        assert tenant.name in row.text
        assert "/ 40" in row.text  # critical credits left, of the tenant's capacity
        # The tenant's low inbox among the laggiest: its oldest lead's age, and 6 waiting.
        lag_row = browser.find_element(
            By.CSS_SELECTOR, f"#lf-laggiest tr[data-tenant='{tenant.id}'][data-tier='low']"
        )
        assert tenant.name in lag_row.text and lag_row.text.endswith(" 6")
        assert float(lag_row.find_element(By.CLASS_NAME, "lf-lag").text.split()[0]) > 0
        assert browser.find_elements(By.CSS_SELECTOR, "#lf-tiers svg polyline")
        for pool in ("a", "b", "c"):
            workers = browser.find_element(
                By.CSS_SELECTOR, f"#lf-pools tr[data-pool='{pool}'] td:nth-child(2)"
            )
            assert int(workers.text) >= 1, pool
        assert "AI provider" in browser.find_element(By.ID, "lf-breakers").text
        assert browser.find_element(By.CSS_SELECTOR, f"tr[data-dead-letter='{letter.id}']")
        assert "paused" in browser.find_element(By.ID, "lf-status").text  # LOW

        screenshot = tmp_path / "status-page.png"
        browser.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 10_000
        if os.environ.get("LEADFLOW_UPDATE_SCREENSHOT") == "1":
            shutil.copy(screenshot, ROOT / "docs" / "status-page.png")

        # Replay from the page: the dead letter's lead goes back to pool C, which syncs it.
        browser.find_element(By.ID, "lf-replay").click()
        wait_until(
            lambda: "Re-enqueued 1 lead(s)" in browser.page_source, timeout=10, message="replay"
        )
        wait_until(
            lambda: DeadLetter.objects.get(pk=letter.pk).replayed_at is not None,
            timeout=30,
            message="the replayed lead reached the CRM",
        )
    finally:
        Policy.objects.filter(pk=Policy.current().pk).update(forced_mode="")
        with contextlib.suppress(AssertionError):
            wait_until(
                lambda: (
                    get_redis().get(redis_keys.MODE_KEY) == b"normal"
                    and get_redis().llen(redis_keys.inbox_key("low", tenant.id)) == 0
                ),
                timeout=30,
                message="back to normal, the tenant's low leads dispatched",
            )
