"""A new admin with no provider key, in real Chromium: Home says no provider can answer and links to
Providers; the key set there (stored encrypted, "set in console") is the one the upstream accepts;
back on Home the notice is gone and "Try a request" gets a real answer, with an API key made for
the org and a curl line that works. Nothing in this walk needs the README.
"""

from playwright import sync_api
from sqlalchemy import select

from gateway import db, memo
from gateway.models import Provider
from tests.conftest import UPSTREAM_KEY
from tests.test_people_browser import sign_in

expect = sync_api.expect


def test_a_new_admin_is_led_from_home_to_a_working_request(gateway, page):
    with db.write_lock, db.session_scope() as s:  # as a fresh install: providers, but no key
        for p in s.scalars(select(Provider)):
            p.api_key_enc, p.api_key_env = None, None
        memo.announce(s, "catalog")
    gateway.flush()
    sign_in(page, gateway, gateway.admin_email, gateway.admin_password, "/admin/")
    first = page.locator("#first-run")
    expect(first).to_contain_text("No provider can answer yet")

    first.locator('a[href="/admin/providers"]').click()
    page.wait_for_url("**/admin/providers")
    row = page.locator('tr[data-provider="fake"]')
    row.locator("input[name=api_key]").fill(UPSTREAM_KEY)
    row.locator("form.key-set button").click()
    expect(page.locator('tr[data-provider="fake"] td.key')).to_have_attribute("data-source", "set in console")
    assert UPSTREAM_KEY not in page.content()  # never shown back

    page.goto(gateway.url + "/admin/")
    expect(page.locator("#first-run")).to_have_count(0)
    box = page.locator("#try")
    box.locator("select[name=model]").select_option("test/fake-gpt")
    box.locator("button[type=submit]").click()
    result = page.locator("#try-result")
    expect(result).to_be_visible()
    expect(page.locator("#try .error")).to_have_count(0)
    request_id = result.get_attribute("data-request-id")
    gateway.flush()
    assert gateway.rows(request_id=request_id)[0].status == 200  # a real request, metered
