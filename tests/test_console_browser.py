"""The admin console in a real browser: Debian's Chromium, driven by Playwright's sync API.

Acceptance: a browser test in real Chromium logs in and sees a request appear in Gateway logs.

The browser is conftest's `page` (Playwright in this gevent-patched process: while it waits, the hub
keeps running the gateway's WSGI server and ledger writer). Every wait has a generous timeout;
nothing sleeps.
"""


import openai
import pytest
from playwright import sync_api

from tests.conftest import TIMEOUT_MS

EMPTY = "No requests yet."
MSG = [{"role": "user", "content": "hi"}]


def row(page, request_id: str):
    return page.locator(f'tbody#log-rows tr[data-request-id="{request_id}"]')


def test_console_login_and_live_logs(gateway, page, tmp_path):
    expect = sync_api.expect

    # Not signed in: /admin bounces to the login form.
    page.goto(gateway.url + "/admin")
    page.wait_for_url("**/admin/login**")
    expect(page.locator("h1")).to_have_text("Sign in")

    # A wrong password is refused with a visible message.
    page.fill("input[name=email]", gateway.admin_email)
    page.fill("input[name=password]", gateway.admin_password + "-wrong")
    page.click("button[type=submit]")
    expect(page.locator("p.error[role=alert]")).to_have_text("Wrong email or password.")

    # The right password lands on Home; Gateway logs is empty so far.
    page.fill("input[name=email]", gateway.admin_email)
    page.fill("input[name=password]", gateway.admin_password)
    page.click("button[type=submit]")
    page.wait_for_url("**/admin/")
    expect(page.locator("h1")).to_have_text("Home")
    page.click("header nav >> text=Gateway logs")
    page.wait_for_url("**/admin/logs**")
    expect(page.locator("h1")).to_have_text("Gateway logs")
    expect(page.locator("tbody#log-rows tr[data-request-id]")).to_have_count(0)
    expect(page.locator("tbody#log-rows td.empty")).to_have_text(EMPTY)

    # An inference request through the official SDK shows up on its own (HTMX polls every 2 s).
    raw = gateway.sdk().chat.completions.with_raw_response.create(model="test/fake-gpt", messages=MSG)
    ok_id = raw.headers["x-request-id"]
    assert raw.parse().choices[0].message.content
    page.wait_for_selector(f'tbody#log-rows tr[data-request-id="{ok_id}"]', timeout=TIMEOUT_MS)
    ok_row = row(page, ok_id)
    expect(ok_row.locator("td").nth(5)).to_have_text("test/fake-gpt")
    expect(ok_row.locator("td .status")).to_have_text("200")
    expect(page.locator("tbody#log-rows td.empty")).to_have_count(0)

    # Filter to errors: the successful row is swapped out.
    page.select_option("select[name=status]", "error")
    expect(ok_row).to_have_count(0)
    page.wait_for_url("**status=error**")
    expect(page.locator("tbody#log-rows td.empty")).to_have_text("No matching requests.")

    # A failing request appears under the error filter; the successful one stays hidden.
    with pytest.raises(openai.RateLimitError) as e:
        gateway.sdk().chat.completions.create(model="test/error-429", messages=MSG)
    err_id = e.value.response.headers["x-request-id"]
    assert err_id and err_id != ok_id
    page.wait_for_selector(f'tbody#log-rows tr[data-request-id="{err_id}"]', timeout=TIMEOUT_MS)
    err_row = row(page, err_id)
    expect(err_row).to_have_class("err")
    expect(err_row.locator("td").nth(5)).to_have_text("test/error-429")
    expect(err_row.locator("td .status")).to_have_text("429")
    expect(ok_row).to_have_count(0)
    assert page.locator("select[name=status]").input_value() == "error"

    # Drill-down from the error row's time link.
    err_row.locator("td").first.locator("a").click()
    page.wait_for_url(f"**/admin/logs/{err_id}")
    expect(page.locator("h1")).to_contain_text(err_id)
    expect(page.locator("dl.detail")).to_contain_text("test/error-429")
    expect(page.locator("dl.detail")).to_contain_text("429")

    # Back to the unfiltered list: both requests are there; drill into the successful one.
    page.click("text=← Gateway logs")
    page.wait_for_url("**/admin/logs")
    expect(row(page, ok_id)).to_have_count(1)
    expect(row(page, err_id)).to_have_count(1)
    logs_shot = tmp_path / "console-logs.png"
    page.screenshot(path=str(logs_shot), full_page=True)
    assert logs_shot.stat().st_size > 0

    row(page, ok_id).locator("td").first.locator("a").click()
    page.wait_for_url(f"**/admin/logs/{ok_id}")
    expect(page.locator("h1")).to_contain_text(ok_id)
    expect(page.locator("dl.detail")).to_contain_text("test/fake-gpt")
    detail_shot = tmp_path / "console-detail.png"
    page.screenshot(path=str(detail_shot), full_page=True)
    assert detail_shot.stat().st_size > 0
