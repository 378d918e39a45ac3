"""Home, Per-user usage, Error reports and the activity export in real Chromium (conftest's `page`).

Signs in as the super-admin and walks: Home (the live tiles update without a reload, the cost-trend
chart is drawn by uPlot on a canvas, Try a request answers), Per-user usage down to one user's
requests in Gateway logs, Error reports, the export page (content logging on, a CSV downloaded).
With GATEWAY_SCREENSHOTS=1 each page is saved at 1280x800 into docs/screenshots/<page>.png.
"""


import openai
import pytest
from playwright import sync_api

from tests.conftest import TIMEOUT_MS, screenshot
from tests.test_export import member_with_key

MSG = [{"role": "user", "content": "hi"}]



def test_home_usage_errors_and_export_in_chromium(gateway, page, tmp_path):
    from gateway.ledger.live import LIVE

    expect = sync_api.expect
    LIVE.reset()  # the last hour is this process's: earlier tests' requests are in it
    uid, key = member_with_key(gateway, "default", "ann@example.com")
    sdk = gateway.sdk(key)
    for _ in range(3):
        sdk.chat.completions.create(model="test/fake-gpt", messages=MSG)
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="test/error-400", messages=MSG)
    gateway.flush()

    page.goto(gateway.url + "/admin/login")
    page.fill("input[name=email]", gateway.admin_email)
    page.fill("input[name=password]", gateway.admin_password)
    page.click("button[type=submit]")
    page.wait_for_url("**/admin/")
    expect(page.locator("h1")).to_have_text("Home")

    # Live: four requests so far; one more shows up on its own (the partial is polled).
    live = page.locator("#live .stats")
    expect(live).to_have_attribute("data-requests", "4")
    sdk.chat.completions.create(model="test/cheap", messages=MSG)
    expect(live).to_have_attribute("data-requests", "5", timeout=TIMEOUT_MS)
    expect(page.locator("#live-errors strong")).to_have_text("1")

    # Cost trends: uPlot draws on a canvas; the view switches to charge by model.
    expect(page.locator("#trend-chart canvas")).to_have_count(1)
    expect(page.locator("#trend-chart .u-legend")).to_contain_text("Benchmark")
    page.select_option("#trend-view", "by_model")
    expect(page.locator("#trend-chart .u-legend")).to_contain_text("test/fake-gpt")
    expect(page.locator("#trend-chart canvas")).to_have_count(1)
    expect(page.locator("#top-users")).to_contain_text("ann@example.com")
    expect(page.locator("#home-providers")).to_contain_text("fake")

    # Try a request: a key is made and the answer shown on the page.
    page.fill("#try-box input[name=message]", "Say hello")
    page.click("#try-box button[type=submit]")
    expect(page.locator("#try-result .answer")).not_to_be_empty()
    expect(page.locator("#try-key")).to_contain_text("curl " + gateway.url + "/v1/chat/completions")
    page.select_option("#trend-view", "totals")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "home")

    # Per-user usage, then one user's requests in Gateway logs.
    page.click("header nav >> text=Per-user usage")
    page.wait_for_url("**/admin/usage")
    expect(page.locator("h1")).to_have_text("Per-user usage")
    row = page.locator(f'#usage-rows tr[data-party-id="{uid}"]')
    expect(row).to_contain_text("ann@example.com")
    expect(row.locator("td").nth(2)).to_have_text("5")
    screenshot(page, "usage")
    row.locator("a", has_text="ann@example.com").click()
    page.wait_for_url(f"**/admin/logs?user={uid}")
    expect(page.locator("#user-filter")).to_contain_text("ann@example.com")
    expect(page.locator("tbody#log-rows tr[data-request-id]")).to_have_count(5)

    # Error reports: the failed request, grouped by type and model.
    page.click("header nav >> text=Error reports")
    page.wait_for_url("**/admin/errors")
    expect(page.locator("#error-groups")).to_contain_text("test/error-400")
    expect(page.locator("#error-rows")).to_contain_text("upstream")
    screenshot(page, "errors")

    # Export: content logging on for the org, then one user's CSV.
    page.goto(gateway.url + "/admin/usage")
    page.click("text=Activity export")
    page.wait_for_url("**/admin/export")
    org_row = page.locator(f'#content-logging-table tr[data-org="{gateway.org().id}"]')
    expect(org_row.locator(".state")).to_have_text("off")
    org_row.locator("input[name=days]").fill("7")
    org_row.locator("button[type=submit]").click()
    expect(page.locator("#content-logging .notice")).to_have_text("Content logging: on, 7 days.")
    page.select_option("#export-party", "user")
    page.select_option(".pick-user select", str(uid))
    screenshot(page, "export")
    with page.expect_download() as download:
        page.click("#export-form button[type=submit]")
    path = tmp_path / "export.csv"
    download.value.save_as(path)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("time,request_id,endpoint") and len(lines) == 1 + 5  # the header and her 5 requests
