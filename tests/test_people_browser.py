"""Users, Apps, Orgs, Budgets, Credits and the customer dashboard in real Chromium (Debian's, via
Playwright), signed in as a super-admin, an org-admin and a member: each walks the pages and sees only
what the role may. Screenshots at 1280x800 go to docs/screenshots/.

The browser is conftest's `page` (Playwright in this gevent-patched process: while it waits, the hub
keeps serving the gateway). Every wait has a generous timeout; nothing sleeps.
"""


from playwright import sync_api
from sqlalchemy import select

from gateway import db
from gateway.models import Org, User
from gateway.services import tenancy, topups
from tests.conftest import screenshot
from tests.test_console_roles import PASSWORD

MSG = [{"role": "user", "content": "hi"}]
expect = sync_api.expect



def sign_in(page, gateway, email: str, password: str, lands: str) -> None:
    page.goto(gateway.url + "/admin/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{lands}")


def add_person(gateway, org: str, email: str, role: str) -> None:
    with db.write_lock, db.session_scope() as s:
        org_id = s.scalar(select(Org.id).where(Org.name == org))
        tenancy.create_admin(s, email, PASSWORD, org_id=org_id, role=role, actor="test")


def nav_links(page) -> list[str]:
    return page.locator("header nav a").evaluate_all("els => els.map(e => e.getAttribute('href'))")


def test_a_super_admin_walks_users_apps_orgs_budgets_and_credits(gateway, page):
    alpha = gateway.new_org("alpha", usd=5)
    add_person(gateway, "alpha", "dev@alpha.example", "member")
    with db.write_lock, db.session_scope() as s:
        class Dev:
            email, is_superadmin, org_id, role = "dev@alpha.example", False, alpha.id, "member"
        rid = topups.request_topup(s, Dev(), s.get(Org, alpha.id), 15_000_000, "PO 4411").id
    page.set_viewport_size({"width": 1280, "height": 800})
    sign_in(page, gateway, gateway.admin_email, gateway.admin_password, "/admin/")

    # Users: add one inline; the one-time password shows once, the table lists them
    page.click("header nav >> text=Users")
    page.wait_for_url("**/admin/users")
    expect(page.locator("h1")).to_have_text("Users")
    page.click("#user-form summary")
    form = page.locator("#user-form")
    form.locator("input[name=email]").fill("lead@alpha.example")
    form.locator("select[name=org]").select_option(str(alpha.id))
    form.locator("select[name=role]").select_option("org-admin")
    form.locator("input[name=weekly_cap]").fill("50")
    form.locator("button[type=submit]").click()
    expect(page.locator("#new-user-password")).to_have_count(1)
    assert len(page.locator("#new-user-password").inner_text()) >= 12
    lead = page.locator('tr[data-user="lead@alpha.example"]')
    expect(lead).to_have_attribute("data-role", "org-admin")
    # change the member's role in their row; the row answers in place
    dev = page.locator('tr[data-user="dev@alpha.example"]')
    dev.locator("select[name=role]").select_option("org-admin")
    dev.locator("select[name=role] + button").click()
    expect(page.locator('tr[data-user="dev@alpha.example"]')).to_have_attribute("data-role", "org-admin")
    expect(page.locator('tr[data-user="dev@alpha.example"] p.notice')).to_have_text("Role: org-admin.")
    screenshot(page, "users")

    # Apps: add one inline; it appears in the table with its DLP status
    page.click("header nav >> text=Apps")
    page.wait_for_url("**/admin/apps")
    page.click("#app-form summary")
    form = page.locator("#app-form")
    form.locator("select[name=org]").select_option(str(alpha.id))
    form.locator("input[name=slug]").fill("web-shop")
    form.locator("input[name=contact]").fill("ops@alpha.example")
    form.locator("button[type=submit]").click()
    expect(page.locator("#app-form p.notice")).to_have_text("Created app web-shop.")
    app = page.locator('tr[data-app="web-shop"]')
    expect(app).to_have_attribute("data-active", "yes")
    app.locator("text=Deactivate").click()
    expect(page.locator('tr[data-app="web-shop"]')).to_have_attribute("data-active", "no")
    screenshot(page, "apps")

    # Orgs: owner, members, plan, balance and DLP columns
    page.click("header nav >> text=Orgs")
    page.wait_for_url("**/admin/orgs")
    row = page.locator('tr[data-org="alpha"]')
    expect(row.locator("td[data-owner]")).to_have_text("dev@alpha.example")
    expect(row.locator("td[data-members]")).to_have_text("2")
    expect(row.locator("td[data-dlp]")).to_have_text("off")
    screenshot(page, "orgs")

    # Budgets: a monthly API spend cap with rollover on alpha
    page.click("header nav >> text=Budgets")
    page.wait_for_url("**/admin/budgets")
    form = page.locator("#budget-form")
    form.locator("select[name=org]").select_option(str(alpha.id))
    form.locator("input[name=amount]").fill("40")
    form.locator("input[name=rollover]").check()
    form.locator("button[value=set]").click()
    expect(page.locator("#budget-form p.notice")).to_contain_text("Budget on org alpha")
    screenshot(page, "budgets")

    # Credits: approve the dashboard's top-up request (confirmed); the log shows it
    page.click("header nav >> text=Credits")
    page.wait_for_url("**/admin/credits")
    pending = page.locator(f'tr[data-topup="{rid}"]')
    expect(pending).to_have_attribute("data-status", "pending")
    page.once("dialog", lambda d: d.accept())
    pending.locator("text=Approve").click()
    expect(page.locator(f'tr[data-topup="{rid}"]')).to_have_attribute("data-status", "approved")
    expect(page.locator("#topups p.notice")).to_contain_text(f"Approved top-up request #{rid}")
    page.locator("#log-filters select[name=org]").select_option(str(alpha.id))
    expect(page.locator("#credit-log [data-balance]")).to_have_text("$20.000000")
    screenshot(page, "credits")
    assert gateway.org("alpha").credits_micros == 20_000_000


def test_an_org_admin_sees_their_org_only(gateway, page):
    gateway.new_org("alpha", usd=7)
    gateway.new_org("bravo")
    add_person(gateway, "alpha", "boss@alpha.example", "org-admin")
    add_person(gateway, "bravo", "spy@bravo.example", "member")
    with db.write_lock, db.session_scope() as s:
        tenancy.create_app(s, tenancy.org_by_name(s, "bravo"), "bravo-app", actor="test")
    sign_in(page, gateway, "boss@alpha.example", PASSWORD, "/admin/")
    links = nav_links(page)
    assert {"/admin/users", "/admin/apps", "/admin/orgs", "/admin/budgets", "/admin/credits", "/dashboard"} <= set(links)
    assert "/admin/providers" not in links and "/admin/strategy" not in links and "/admin/reconciliation" not in links

    page.click("header nav >> text=Users")
    expect(page.locator('tr[data-user="boss@alpha.example"]')).to_have_count(1)
    expect(page.locator('tr[data-user="spy@bravo.example"]')).to_have_count(0)
    expect(page.locator('#user-form select[name=role] option[value="super-admin"]')).to_have_count(0)
    page.click("#user-form summary")  # a teammate in their own org
    page.fill("#user-form input[name=email]", "mate@alpha.example")
    page.locator("#user-form button[type=submit]").click()
    expect(page.locator("#new-user-password")).to_have_count(1)
    expect(page.locator('tr[data-user="mate@alpha.example"]')).to_have_attribute("data-role", "member")
    screenshot(page, "users-org-admin")

    page.click("header nav >> text=Apps")
    expect(page.locator('tr[data-app="bravo-app"]')).to_have_count(0)
    page.click("header nav >> text=Orgs")
    expect(page.locator("tr[data-org]")).to_have_count(1)
    expect(page.locator('tr[data-org="alpha"] td[data-members]')).to_have_text("2")
    page.click("header nav >> text=Budgets")
    expect(page.locator("#budget-form select[name=org] option")).to_have_count(1)
    page.click("header nav >> text=Credits")
    expect(page.locator("#credits-form")).to_have_count(0)  # adding credits is the super-admins'
    expect(page.locator("#credit-log [data-balance]")).to_have_text("$7.000000")
    page.click("header nav >> text=My dashboard")
    expect(page.locator("[data-org]")).to_have_text("alpha")
    expect(page.locator("#credit-log")).to_have_count(1)  # an admin sees the org's credit log
    page.goto(gateway.url + "/admin/providers")
    expect(page.locator("body")).to_contain_text("Forbidden")


def test_a_member_lives_on_their_dashboard(gateway, page):
    from gateway.services import features

    class Root:
        email, is_superadmin, org_id, role = "root@ops.example", True, None, "super-admin"

    add_person(gateway, "default", "dev@default.example", "member")
    with db.write_lock, db.session_scope() as s:  # the operator offers two savings layers
        features.put_allowed(s, Root(), ["exact_cache", "compression"])
    gateway.flush()
    page.set_viewport_size({"width": 1280, "height": 800})
    sign_in(page, gateway, "dev@default.example", PASSWORD, "/dashboard")
    expect(page.locator("h1")).to_have_text("My dashboard")
    assert nav_links(page) == ["/dashboard"]

    # a key of their own, shown once; a request with it shows in My requests
    page.fill("#my-keys input[name=name]", "laptop")
    page.click("#my-keys button[type=submit]")
    secret = page.locator("#my-new-key").input_value()
    assert secret.startswith("gw-")
    gateway.flush()
    raw = gateway.sdk(secret).chat.completions.with_raw_response.create(model="test/fake-gpt", messages=MSG,
                                                                        max_tokens=5)
    rid = raw.headers["x-request-id"]
    gateway.flush()
    page.wait_for_selector(f'tr[data-request-id="{rid}"]')  # the table polls

    # a pricing preview and a top-up request
    page.locator("#quote select[name=model]").select_option("test/fake-gpt")
    page.fill("#quote textarea[name=prompt]", "How much would this cost?")
    page.fill("#quote input[name=max_tokens]", "100")
    page.click("#quote button[type=submit]")
    expect(page.locator("#quote-result [data-charge]")).to_contain_text("$")
    page.fill("#topup input[name=amount]", "25")
    page.click("#topup button[type=submit]")
    expect(page.locator("#topup p.notice")).to_contain_text("Asked for $25.000000")

    # the offered features are listed; switching them is the org-admins'
    expect(page.locator("#features tr[data-feature]")).to_have_count(2)
    expect(page.locator("#features button")).to_have_count(0)

    # the charts are drawn from the rollups (reload: the page embeds them)
    page.reload()
    expect(page.locator("#chart-requests .uplot")).to_have_count(1)
    expect(page.locator("#chart-savings .uplot")).to_have_count(1)
    expect(page.locator("[data-requests]")).to_have_text("1")
    screenshot(page, "dashboard")

    page.locator(f'tr[data-request-id="{rid}"] a').click()
    page.wait_for_url(f"**/dashboard/requests/{rid}")
    expect(page.locator("dl.detail")).to_contain_text("test/fake-gpt")

    # any console page sends them back to their dashboard
    page.goto(gateway.url + "/admin/users")
    page.wait_for_url("**/dashboard")
    with db.session_scope() as s:
        assert s.scalar(select(User.role).where(User.email == "dev@default.example")) == "member"
