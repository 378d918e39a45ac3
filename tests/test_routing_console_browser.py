"""The Model Router in real Chromium (Debian's, via Playwright): an alias added in the page routes the next
request made with the openai SDK; deleting it restores the global alias.

The browser is conftest's `page` (Playwright in this gevent-patched process: while it waits, the hub
keeps serving the gateway). Every wait has a generous timeout; nothing sleeps.
"""

from playwright import sync_api

MSG = [{"role": "user", "content": "hi"}]


def served_model(gateway, model: str) -> str:
    raw = gateway.sdk().chat.completions.with_raw_response.create(model=model, messages=MSG)
    assert raw.parse().choices[0].message.content
    return gateway.rows(request_id=raw.headers["x-request-id"])[0].model


def test_model_router_alias_routes_the_next_sdk_request(gateway, page, tmp_path):
    expect = sync_api.expect
    assert served_model(gateway, "fast") == "test/fake-gpt"  # the global alias from the config

    page.goto(gateway.url + "/admin/login")
    page.fill("input[name=email]", gateway.admin_email)
    page.fill("input[name=password]", gateway.admin_password)
    page.click("button[type=submit]")
    page.wait_for_url("**/admin/")
    page.click("header nav >> text=Model Router")
    page.wait_for_url("**/admin/aliases")
    expect(page.locator("h1")).to_have_text("Model Router")
    expect(page.locator('tr[data-alias="fast"][data-scope="global"]')).to_have_count(1)

    # A typo is explained in the form, and nothing is saved.
    default_org = str(gateway.org("default").id)
    form = page.locator("#alias-form")
    form.locator("select[name=scope]").select_option(default_org)
    form.locator("input[name=name]").fill("fast")
    form.locator("input[name=targets]").fill("test/chaep")
    form.locator("button[type=submit]").click()
    expect(page.locator("#alias-form p.error[role=alert]")).to_have_text(
        "Unknown model 'test/chaep': pick a slug from Available Models.")
    expect(page.locator('tr[data-alias="fast"][data-scope="default"]')).to_have_count(0)

    # Corrected: saved for the org, and the table refreshes itself (HX-Trigger: aliases-changed).
    form = page.locator("#alias-form")
    assert form.locator("input[name=name]").input_value() == "fast"  # what was typed is kept
    form.locator("input[name=targets]").fill("test/cheap")
    form.locator("button[type=submit]").click()
    expect(page.locator("#alias-form p.notice")).to_contain_text("Saved alias fast")
    org_row = page.locator('tr[data-alias="fast"][data-scope="default"]')
    expect(org_row).to_have_count(1)
    expect(org_row.locator("td").nth(2)).to_have_text("test/cheap")
    shot = tmp_path / "model-router.png"  # for a human look: pytest keeps tmp_path
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0

    gateway.flush()  # the config sync (every 50 ms in tests)
    assert served_model(gateway, "fast") == "test/cheap"

    # Edit loads the alias into the form; Delete (confirmed) removes the row and the override.
    org_row.locator("a", has_text="Edit").click()
    expect(page.locator("#alias-form input[name=targets]")).to_have_value("test/cheap")
    page.once("dialog", lambda dialog: dialog.accept())
    org_row.locator("button", has_text="Delete").click()
    expect(org_row).to_have_count(0)
    gateway.flush()
    assert served_model(gateway, "fast") == "test/fake-gpt"

    # Both changes are in the audit log, with who made them.
    page.click("header nav >> text=Audit log")
    page.wait_for_url("**/admin/audit")
    expect(page.locator('#audit-rows tr[data-action="alias.create"]')).to_contain_text(gateway.admin_email)
    expect(page.locator('#audit-rows tr[data-action="alias.delete"]')).to_contain_text("org default")
