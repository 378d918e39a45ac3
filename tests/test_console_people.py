"""Users, Apps, Orgs, Budgets and Credits pages over real HTTP (CSRF included): users made inline get a
one-time password shown once, role, status, cap and password changes take effect and are audited,
org-admins stay inside their org and below super-admin, apps and their keys switch on and off,
top-up requests are credited once however many approvals race, and hostile forms get a message
(or a 400 without CSRF), never a 500."""

import html
import re

import gevent
import pytest
from gevent.pywsgi import WSGIServer
from sqlalchemy import func, select

from gateway import db
from gateway.models import ApiKey, App, AuditLog, Budget, CreditTransaction, TopupRequest, User
from gateway.services import tenancy, topups
from gateway.services.errors import AdminError
from tests.test_console import login
from tests.test_console_roles import PASSWORD, person
from tests.test_console_tenancy import ask, row_of, status_of
from tests.test_routing_console import Console, admin

ONE_TIME = re.compile(r'<code class="secret"[^>]*>([^<]+)</code>')


def user_id(email: str) -> int:
    with db.session_scope() as s:
        return s.scalar(select(User.id).where(User.email == email))


def audits(action: str) -> list[AuditLog]:
    with db.session_scope() as s:
        return list(s.scalars(select(AuditLog).where(AuditLog.action == action)))


def counts() -> dict[str, int]:
    with db.session_scope() as s:
        return {m.__name__: s.scalar(select(func.count()).select_from(m))
                for m in (User, App, ApiKey, Budget, AuditLog, TopupRequest, CreditTransaction)}


def user_key(gateway, email: str) -> str:
    with db.write_lock, db.session_scope() as s:
        user = s.scalar(select(User).where(User.email == email))
        secret = tenancy.create_key(s, s.get(tenancy.Org, user.org_id), user_id=user.id, actor="test").secret
    gateway.flush()
    return secret


def test_a_user_created_inline_signs_in_with_a_one_time_password_shown_once(gateway):
    alpha = gateway.new_org("alpha")
    console = admin(gateway)
    page = console.get("/admin/users")
    assert page.status_code == 200 and "<h1>Users</h1>" in page.text and 'id="user-form"' in page.text
    assert row_of(page.text, "user", gateway.admin_email)  # the first super-admin

    r = console.post("/admin/users", {"email": "Dev@Alpha.example", "org": alpha.id, "role": "member",
                                      "weekly_cap": "25"}, htmx=True)
    assert r.status_code == 200 and r.headers["HX-Trigger"] == "users-created"
    assert r.text.lstrip().startswith('<form id="user-form"')
    password = ONE_TIME.search(r.text).group(1)
    assert "shown once" in r.text
    with db.session_scope() as s:
        dev = s.scalar(select(User).where(User.email == "dev@alpha.example"))
        assert (dev.org_id, dev.role, dev.is_superadmin, dev.must_change_password) == (alpha.id, "member", False, True)
        cap = s.scalar(select(Budget).where(Budget.user_id == dev.id))
        assert (cap.amount_micros, cap.window, cap.hard) == (25_000_000, "week", True)
    listed = console.get("/admin/users").text
    row = row_of(listed, "user", "dev@alpha.example")
    assert 'data-role="member"' in row and 'data-status="active"' in row and 'value="25.000000"' in row
    assert password not in listed  # shown once, in the answer to the form only

    _, signed = login(gateway, "dev@alpha.example", password)
    assert signed.url.endswith("/admin/password")  # the one-time password is changed first
    created = audits("admin.create")
    assert any(a.target == "dev@alpha.example" and a.actor == gateway.admin_email for a in created)
    assert all(password not in (a.detail or "") for a in created)


def test_role_status_cap_and_reset_take_effect_and_are_audited(gateway):
    gateway.new_org("alpha")
    console = admin(gateway)
    dev_console = person(gateway, "alpha", "dev@alpha.example", "member")
    dev = user_id("dev@alpha.example")
    key = user_key(gateway, "dev@alpha.example")
    assert ask(gateway, key)

    # role: member -> org-admin, their sessions end (the new rights from the next sign-in)
    r = console.post(f"/admin/users/{dev}/role", {"role": "org-admin"}, htmx=True)
    assert r.status_code == 200 and 'data-role="org-admin"' in r.text and "Role: org-admin." in r.text
    assert dev_console.get("/dashboard", allow_redirects=False).status_code == 302
    assert Console(gateway, "dev@alpha.example", PASSWORD).get("/admin/users").status_code == 200
    assert [a.detail for a in audits("user.role")] == ["member -> org-admin"]

    # weekly cap: set, then cleared
    r = console.post(f"/admin/users/{dev}/cap", {"weekly_cap": "3.5"}, htmx=True)
    assert "Weekly cap saved." in r.text and 'value="3.500000"' in r.text
    assert console.post(f"/admin/users/{dev}/cap", {"weekly_cap": ""}, htmx=True).status_code == 200
    with db.session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Budget).where(Budget.user_id == dev)) == 0
    assert [a.action for a in audits("budget.set")] + [a.action for a in audits("budget.clear")] == [
        "budget.set", "budget.clear"]

    # disable: their key answers 401, they cannot sign in; enable: both work again
    r = console.post(f"/admin/users/{dev}/status", {"active": "0"}, htmx=True)
    assert 'data-status="disabled"' in r.text and "Enable</button>" in r.text
    gateway.flush()
    assert status_of(gateway, key) == 401
    assert "disabled" in login(gateway, "dev@alpha.example", PASSWORD)[1].text
    console.post(f"/admin/users/{dev}/status", {"active": "1"}, htmx=True)
    gateway.flush()
    assert ask(gateway, key)

    # reset: a one-time password in the row, once; the old one stops working
    r = console.post(f"/admin/users/{dev}/reset", {}, htmx=True)
    password = ONE_TIME.search(r.text).group(1)
    assert login(gateway, "dev@alpha.example", PASSWORD)[1].status_code == 401
    assert login(gateway, "dev@alpha.example", password)[1].url.endswith("/admin/password")
    assert password not in console.get("/admin/users").text
    assert len(audits("password.reset")) == 1 and len(audits("user.disable")) == 1
    trail = console.get("/admin/audit?area=user").text  # the audit page filters the new areas
    assert "user.role" in trail and "user.disable" in trail and "password.reset" not in trail


def test_an_org_admin_manages_only_their_org_and_never_beyond_org_admin(gateway):
    alpha, bravo = gateway.new_org("alpha"), gateway.new_org("bravo")
    boss = person(gateway, "alpha", "boss@alpha.example", "org-admin")
    person(gateway, "bravo", "other@bravo.example", "member")
    person(gateway, "alpha", "mate@alpha.example", "member")
    other, mate, root = user_id("other@bravo.example"), user_id("mate@alpha.example"), user_id(gateway.admin_email)

    page = boss.get("/admin/users").text
    assert "mate@alpha.example" in page and "bravo" not in page and gateway.admin_email not in page
    assert "super-admin</option>" not in page  # not offered
    state = counts()
    # another org's users and the super-admin: 403, whatever the change
    for path, data in ((f"/admin/users/{other}/role", {"role": "org-admin"}),
                       (f"/admin/users/{other}/status", {"active": "0"}),
                       (f"/admin/users/{other}/cap", {"weekly_cap": "1"}),
                       (f"/admin/users/{other}/reset", {}),
                       (f"/admin/users/{root}/status", {"active": "0"}),
                       (f"/admin/users/{root}/reset", {}),
                       ("/admin/users", {"email": "x@bravo.example", "org": bravo.id, "role": "member"}),
                       ("/admin/users", {"email": "x@alpha.example", "org": alpha.id, "role": "super-admin"}),
                       (f"/admin/users/{mate}/role", {"role": "super-admin"}),
                       ("/admin/apps", {"org": bravo.id, "slug": "sneaky"})):
        assert boss.post(path, data, htmx=True).status_code == 403, path
    assert counts() == state
    # their own org: fine
    r = boss.post("/admin/users", {"email": "new@alpha.example", "org": alpha.id, "role": "org-admin"}, htmx=True)
    assert ONE_TIME.search(r.text)
    assert 'data-role="org-admin"' in boss.post(f"/admin/users/{mate}/role", {"role": "org-admin"}, htmx=True).text
    # not themselves (no lock-out by a click)
    me = user_id("boss@alpha.example")
    assert "cannot change the role of yourself" in boss.post(f"/admin/users/{me}/role", {"role": "member"},
                                                             htmx=True).text


def test_the_last_super_admin_stays_one(gateway):
    console = admin(gateway)
    root = user_id(gateway.admin_email)
    assert "yourself" in console.post(f"/admin/users/{root}/status", {"active": "0"}, htmx=True).text
    second = person(gateway, None, "second@ops.example", "super-admin")
    r = second.post(f"/admin/users/{root}/role", {"role": "member"}, htmx=True)
    assert "has no org" in r.text
    with db.write_lock, db.session_scope() as s:  # with the other one disabled, the first is the last
        s.scalar(select(User).where(User.email == "second@ops.example")).status = "disabled"
    with db.write_lock, db.session_scope() as s:
        from gateway.services import people

        class Ops:
            email, is_superadmin, org_id, role, id = "ops", True, None, "super-admin", -1

        with pytest.raises(AdminError, match="last active super-admin"):
            people.set_status(s, Ops(), root, False)


def test_apps_created_inline_switch_their_keys_and_show_dlp(gateway):
    alpha = gateway.new_org("alpha")
    boss = person(gateway, "alpha", "boss@alpha.example", "org-admin")
    page = boss.get("/admin/apps")
    assert page.status_code == 200 and "<h1>Apps</h1>" in page.text and "No apps yet." in page.text
    r = boss.post("/admin/apps", {"org": alpha.id, "slug": "web-shop", "name": "Web shop",
                                  "contact": "ops@alpha.example"}, htmx=True)
    assert "Created app web-shop." in r.text and r.headers["HX-Trigger"] == "apps-created"
    dup = boss.post("/admin/apps", {"org": alpha.id, "slug": "web-shop"}, htmx=True)
    assert "already has an app" in dup.text
    bad = boss.post("/admin/apps", {"org": alpha.id, "slug": "Not A Slug!"}, htmx=True)
    assert "slug is 1-64 lowercase" in bad.text
    with db.session_scope() as s:
        app = s.scalar(select(App).where(App.slug == "web-shop"))
    with db.write_lock, db.session_scope() as s:
        secret = tenancy.create_key(s, s.get(tenancy.Org, alpha.id), name="shop", app_id=app.id, actor="t").secret
    gateway.flush()
    row = row_of(boss.get("/admin/apps").text, "app", "web-shop")
    assert "ops@alpha.example" in row and 'data-active="yes"' in row and 'data-dlp="off"' in row
    assert f"{secret[:10]}…" in row and secret not in row  # the app's keys by prefix

    keys_form = boss.get(f"/admin/keys?org={alpha.id}&app=web-shop").text  # the row's "Add a key"
    assert 'name="app" value="web-shop"' in keys_form
    r = boss.post(f"/admin/apps/{app.id}/active", {"active": "0"}, htmx=True)
    assert 'data-active="no"' in r.text and "Activate</button>" in r.text
    gateway.flush()
    assert status_of(gateway, secret) == 401
    boss.post(f"/admin/apps/{app.id}/active", {"active": "1"}, htmx=True)
    gateway.flush()
    assert ask(gateway, secret)
    assert {a.action for a in audits("app.create") + audits("app.disable") + audits("app.enable")} == {
        "app.create", "app.disable", "app.enable"}
    # DLP on for the org: the app follows it
    with db.write_lock, db.session_scope() as s:
        from gateway.services import dlp
        dlp.enable(s, dlp.CLI, alpha.id)
    assert 'data-dlp="on"' in row_of(boss.get("/admin/apps").text, "app", "web-shop")


def test_the_orgs_page_shows_owner_members_cap_rollover_plan_balance_and_dlp(gateway):
    alpha = gateway.new_org("alpha", usd=12)
    person(gateway, "alpha", "boss@alpha.example", "org-admin")
    person(gateway, "alpha", "dev@alpha.example", "member")
    console = admin(gateway)
    console.post("/admin/orgs/budget", {"org": alpha.id, "amount": "40", "window": "month", "rollover": "on",
                                        "action": "set"}, htmx=True)
    console.post("/admin/plans", {"preset": "starter"}, htmx=True)
    console.post("/admin/plans/assign", {"org": alpha.id, "plan": "starter"}, htmx=True)
    row = row_of(console.get("/admin/orgs").text, "org", "alpha")
    assert "boss@alpha.example" in row and 'data-members="2"' in row and "$40.000000 / month" in row
    assert "<td data-rollover>yes</td>" in row and "<td data-plan>starter</td>" in row
    assert 'data-credits="12.000000"' in row and 'data-dlp="off"' in row
    members = console.get(f"/admin/users?org={alpha.id}").text  # the members link: alpha's users only
    assert "boss@alpha.example" in members and "dev@alpha.example" in members
    assert f'data-user="{gateway.admin_email}"' not in members
    assert f'data-user="{gateway.admin_email}"' in console.get("/admin/users").text


def test_budgets_and_credits_have_their_own_pages(gateway):
    alpha = gateway.new_org("alpha")
    console = admin(gateway)
    budgets = console.get("/admin/budgets")
    assert budgets.status_code == 200 and "<h1>Budgets</h1>" in budgets.text and 'id="budget-form"' in budgets.text
    r = console.post("/admin/orgs/budget", {"org": alpha.id, "amount": "5", "window": "week", "action": "set"})
    assert r.status_code == 200 and "<h1>Budgets</h1>" in r.text and 'data-budget="org:"' in r.text  # a plain post
    credits = console.get(f"/admin/credits?org={alpha.id}")
    assert "<h1>Credits</h1>" in credits.text and 'id="credits-form"' in credits.text and 'id="adjust-form"' in credits.text
    assert 'data-kind="topup"' in credits.text  # alpha's starting credits, in its log
    r = console.post("/admin/orgs/credits", {"org": alpha.id, "amount": "abc"})
    assert r.status_code == 422 and "<h1>Credits</h1>" in r.text and "is not an amount" in r.text

    boss = person(gateway, "alpha", "boss@alpha.example", "org-admin")
    own = boss.get("/admin/credits").text
    assert 'data-kind="topup"' in own and 'id="credits-form"' not in own and "default" not in own
    assert boss.get(f"/admin/credits?org={gateway.org().id}").text.count('data-kind=') == own.count('data-kind=')


def request_topup(gateway, org_id: int, usd: str) -> int:
    with db.write_lock, db.session_scope() as s:
        class Dev:
            email, is_superadmin, org_id, role = "dev@alpha.example", False, None, "member"
        Dev.org_id = org_id
        return topups.request_topup(s, Dev(), s.get(tenancy.Org, org_id), tenancy.parse_usd(usd), "PO 1").id


def test_two_approvals_of_one_top_up_credit_it_once(gateway):
    alpha = gateway.new_org("alpha", usd=1)
    rid = request_topup(gateway, alpha.id, "7")
    first, second = admin(gateway), person(gateway, None, "ops2@ops.example", "super-admin")
    page = first.get("/admin/credits").text
    assert f'data-topup="{rid}" data-status="pending"' in page and "Approve</button>" in page
    jobs = [gevent.spawn(c.post, f"/admin/credits/requests/{rid}", {"decision": "approve"}, True)
            for c in (first, second, first, second)]
    gevent.joinall(jobs, raise_error=True)
    texts = [j.value.text for j in jobs]
    assert sum("Approved top-up request" in t for t in texts) == 1
    assert sum("was already decided" in t for t in texts) == 3
    assert gateway.org("alpha").credits_micros == 8_000_000
    with db.session_scope() as s:
        assert s.scalar(select(func.count()).select_from(CreditTransaction).where(
            CreditTransaction.org_id == alpha.id, CreditTransaction.kind == "topup")) == 2  # the first $1, then $7
        assert s.get(TopupRequest, rid).status == "approved"
    # a reject after the approval changes nothing either
    assert "already decided" in first.post(f"/admin/credits/requests/{rid}", {"decision": "reject"}, True).text
    assert gateway.org("alpha").credits_micros == 8_000_000


def test_an_approval_that_read_the_request_before_another_committed_is_refused(gateway):
    """Two processes: each read the request as pending; the second's conditional update finds it decided."""
    alpha = gateway.new_org("alpha", usd=1)
    rid = request_topup(gateway, alpha.id, "5")

    class Ops:
        email, is_superadmin, org_id = "ops", True, None

    stale = db.SessionLocal()
    try:
        assert stale.get(TopupRequest, rid).status == "pending"  # loaded before the other approval
        with db.write_lock, db.session_scope() as s:
            topups.decide(s, Ops(), rid, True)
        with db.write_lock, pytest.raises(AdminError, match="already decided"):
            topups.decide(stale, Ops(), rid, True)
        stale.rollback()
    finally:
        stale.close()
    assert gateway.org("alpha").credits_micros == 6_000_000


def test_org_admins_and_members_cannot_decide_top_ups(gateway):
    alpha = gateway.new_org("alpha", usd=1)
    rid = request_topup(gateway, alpha.id, "5")
    boss = person(gateway, "alpha", "boss@alpha.example", "org-admin")
    seen = boss.get("/admin/credits").text
    assert f'data-topup="{rid}"' in seen and "Approve</button>" not in seen
    assert boss.post(f"/admin/credits/requests/{rid}", {"decision": "approve"}).status_code == 403
    member = person(gateway, "alpha", "dev@alpha.example", "member")
    assert member.post(f"/admin/credits/requests/{rid}", {"decision": "approve"}).status_code == 403
    assert admin(gateway).post(f"/admin/credits/requests/{rid}", {"decision": "maybe"}).status_code == 400
    assert gateway.org("alpha").credits_micros == 1_000_000


def test_hostile_forms_get_a_message_or_a_400_never_a_500(gateway):
    alpha = gateway.new_org("alpha")
    console = admin(gateway)
    person(gateway, "alpha", "dev@alpha.example", "member")
    dev = user_id("dev@alpha.example")
    state = counts()
    cases = [
        ("/admin/users", {"email": "not-an-email", "org": alpha.id, "role": "member"}, "valid email"),
        ("/admin/users", {"email": "a@b.example", "org": "abc", "role": "member"}, "Choose an org."),
        ("/admin/users", {"email": "a@b.example", "org": "99999999999999999999", "role": "member"}, "Choose an org."),
        ("/admin/users", {"email": "a@b.example", "org": alpha.id, "role": "root"}, "Role must be one of"),
        ("/admin/users", {"email": "a@b.example", "org": alpha.id, "role": "member", "weekly_cap": "NaN"},
         "is not an amount"),
        ("/admin/users", {"email": "a@b.example", "org": alpha.id, "role": "member", "weekly_cap": "1e40"},
         "at most"),
        ("/admin/users", {"email": "x" * 100_000 + "@b.example", "org": alpha.id, "role": "member"}, "valid email"),
        ("/admin/users", {"email": "dev@alpha.example", "org": alpha.id, "role": "member"}, "already exists"),
        (f"/admin/users/{dev}/cap", {"weekly_cap": "-3"}, "must be positive"),
        (f"/admin/users/{dev}/cap", {"weekly_cap": "9" * 5000}, "at most"),
        (f"/admin/users/{dev}/role", {"role": "x" * 10_000}, "Role must be one of"),
        ("/admin/apps", {"org": alpha.id, "slug": "ok-slug", "contact": "nope"}, "must be an email"),
        ("/admin/apps", {"org": alpha.id, "slug": "s" * 10_000}, "slug is 1-64"),
    ]
    for path, data, says in cases:
        for htmx in (True, False):
            r = console.post(path, data, htmx=htmx)
            assert r.status_code == (200 if htmx else 422), (path, htmx, r.status_code)
            assert says in html.unescape(r.text), (path, data, says)
    assert counts() == state
    assert console.post("/admin/users/99999/role", {"role": "member"}, htmx=True).status_code == 404
    huge = "9" * 30  # beyond any id the database can bind: no such row, not a 500
    for path in (f"/admin/users/{huge}/role", f"/admin/users/{huge}/reset", f"/admin/apps/{huge}/active",
                 f"/admin/credits/requests/{huge}", f"/admin/keys/{huge}/revoke"):
        assert console.post(path, {"role": "member", "decision": "approve", "active": "1"}).status_code == 404, path
    assert console.get(f"/admin/orgs/credits?org={huge}").status_code == 404
    assert console.get(f"/admin/credits?org={huge}").status_code == 200
    # no CSRF token: 400 on every form of these pages, nothing written
    for path in ("/admin/users", f"/admin/users/{dev}/role", f"/admin/users/{dev}/status", f"/admin/users/{dev}/cap",
                 f"/admin/users/{dev}/reset", "/admin/apps", "/admin/apps/1/active", "/admin/credits/requests/1",
                 "/admin/orgs/budget", "/admin/orgs/credits"):
        r = console.http.post(gateway.url + path, data={"role": "org-admin", "email": "c@d.example", "org": alpha.id})
        assert r.status_code == 400, path
    assert counts() == state


def test_a_top_up_request_posts_an_event_to_the_payment_hook(gateway_factory):
    received = []

    def hook(environ, start_response):
        import json

        received.append(json.loads(environ["wsgi.input"].read()))
        start_response("204 No Content", [])
        return [b""]

    server = WSGIServer(("127.0.0.1", 0), hook, log=None)
    server.start()
    try:
        gateway = gateway_factory(topup_url=f"http://127.0.0.1:{server.server_port}/topups")
        alpha = gateway.new_org("alpha", usd=1)
        rid = request_topup(gateway, alpha.id, "2.5")
        from tests.conftest import wait_for

        wait_for(lambda: len(received) == 1)
        assert received[0]["type"] == "topup.requested" and received[0]["id"] == rid
        assert (received[0]["org"], received[0]["amount_usd"], received[0]["status"]) == ("alpha", "2.500000", "pending")
        admin(gateway).post(f"/admin/credits/requests/{rid}", {"decision": "reject"}, htmx=True)
        wait_for(lambda: len(received) == 2)
        assert received[1]["type"] == "topup.rejected" and received[1]["decided_by"] == gateway.admin_email
    finally:
        server.stop()
    # a hook that is down delays nothing and loses no request
    topups.HOOK_URL = "http://127.0.0.1:9/down"
    try:
        rid2 = request_topup(gateway, alpha.id, "1")
        with db.session_scope() as s:
            assert s.get(TopupRequest, rid2).status == "pending"
    finally:
        topups.HOOK_URL = None


def test_disabling_a_user_ends_their_console_session(gateway):
    gateway.new_org("alpha")
    dev_console = person(gateway, "alpha", "dev@alpha.example", "org-admin")
    assert dev_console.get("/admin/users").status_code == 200
    admin(gateway).post(f"/admin/users/{user_id('dev@alpha.example')}/status", {"active": "0"}, htmx=True)
    assert dev_console.get("/admin/users", allow_redirects=False).status_code == 302
