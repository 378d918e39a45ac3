"""The customer dashboard over real HTTP: every signed-in user's own keys (bound to them, the secret
shown once, members never admin scope), their own requests only, usage charts from the party rollups,
the pricing preview equal to POST /v1/account/quote, credits and a top-up request that the operator
approves, and hostile forms answered with a message (or 400 without CSRF), never a 500."""

import html
import json
import re

import requests
from sqlalchemy import func, select

from gateway import crypto, db
from gateway.models import ApiKey, AuditLog, TopupRequest, User
from tests.test_console_roles import person
from tests.test_console_tenancy import ask, status_of
from tests.test_routing_console import admin

SECRET = re.compile(r'id="my-new-key" readonly value="([^"]+)"')


def key_of(secret: str) -> ApiKey:
    with db.session_scope() as s:
        return s.scalar(select(ApiKey).where(ApiKey.digest == crypto.digest(secret)))


def usage_of(page: str) -> dict:
    return json.loads(html.unescape(re.search(r'id="usage-data">(.*?)</script>', page, re.S).group(1)))


def test_not_signed_in_goes_to_sign_in_and_back(gateway):
    r = requests.get(gateway.url + "/dashboard", allow_redirects=False)
    assert r.status_code == 302 and "/admin/login?next=/dashboard" in r.headers["Location"]


def test_a_members_own_keys_are_bound_to_them_shown_once_and_revocable(gateway):
    gateway.new_org("alpha")
    dev = person(gateway, "alpha", "dev@alpha.example", "member")
    page = dev.get("/dashboard").text
    assert "No keys of your own yet." in page and '<option value="admin"' not in page
    r = dev.post("/dashboard/keys", {"name": "laptop", "scope": "inference"}, htmx=True)
    assert r.status_code == 200 and r.headers["HX-Trigger"] == "my-keys-changed"
    assert r.text.lstrip().startswith('<section class="card" id="my-keys">')
    secret = SECRET.search(r.text).group(1)
    key = key_of(secret)
    with db.session_scope() as s:
        me = s.scalar(select(User).where(User.email == "dev@alpha.example"))
    assert (key.user_id, key.org_id, key.scope, key.name) == (me.id, me.org_id, "inference", "laptop")
    gateway.flush()
    assert ask(gateway, secret)
    assert secret not in dev.get("/dashboard").text  # once only

    # a member cannot mint an admin key (it would manage every key of the org)
    r = dev.post("/dashboard/keys", {"name": "root", "scope": "admin"}, htmx=True)
    assert "Choose one of the scopes inference, read." in r.text
    with db.session_scope() as s:
        assert s.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.scope == "admin",
                                                                       ApiKey.user_id == me.id)) == 0

    # another user's key, or an org key: not theirs to revoke (404), still live
    mate = person(gateway, "alpha", "mate@alpha.example", "member")
    theirs = SECRET.search(mate.post("/dashboard/keys", {"name": "m"}, htmx=True).text).group(1)
    assert dev.post(f"/dashboard/keys/{key_of(theirs).id}/revoke", {}, htmx=True).status_code == 404
    assert dev.post(f"/dashboard/keys/{key_of(gateway.api_key).id}/revoke", {}, htmx=True).status_code == 404
    gateway.flush()
    assert ask(gateway, theirs) and ask(gateway, gateway.api_key)

    r = dev.post(f"/dashboard/keys/{key.id}/revoke", {}, htmx=True)
    assert f'data-key="{key.id}" data-state="revoked"' in r.text
    gateway.flush()
    assert status_of(gateway, secret) == 401
    with db.session_scope() as s:
        actions = [a.action for a in s.scalars(select(AuditLog).where(AuditLog.actor == "dev@alpha.example"))]
    assert actions.count("key.create") == 1 and actions.count("key.revoke") == 1
    # an org-admin may mint an admin key of their own
    boss = person(gateway, "alpha", "boss@alpha.example", "org-admin")
    assert SECRET.search(boss.post("/dashboard/keys", {"name": "ops", "scope": "admin"}, htmx=True).text)


def test_each_user_sees_only_their_own_requests_and_usage(gateway):
    gateway.new_org("alpha")
    dev, mate = (person(gateway, "alpha", "dev@alpha.example", "member"),
                 person(gateway, "alpha", "mate@alpha.example", "member"))
    dev_key = SECRET.search(dev.post("/dashboard/keys", {"name": "d"}, htmx=True).text).group(1)
    mate_key = SECRET.search(mate.post("/dashboard/keys", {"name": "m"}, htmx=True).text).group(1)
    gateway.flush()
    mine = [gateway.sdk(dev_key).chat.completions.with_raw_response.create(
        model="test/fake-gpt", messages=[{"role": "user", "content": "hi"}], max_tokens=5).headers["x-request-id"]
        for _ in range(2)]
    theirs = gateway.sdk(mate_key).chat.completions.with_raw_response.create(
        model="test/fake-gpt", messages=[{"role": "user", "content": "yo"}], max_tokens=5).headers["x-request-id"]
    org_only = gateway.sdk().chat.completions.with_raw_response.create(
        model="test/fake-gpt", messages=[{"role": "user", "content": "x"}], max_tokens=5).headers["x-request-id"]
    gateway.flush()

    page = dev.get("/dashboard").text
    assert all(f'data-request-id="{rid}"' in page for rid in mine)
    assert theirs not in page and org_only not in page
    usage = usage_of(page)
    assert sum(usage["requests"]) == 2 and len(usage["t"]) == 7 * 24 and sum(usage["charge_micros"]) > 0
    assert sum(usage_of(mate.get("/dashboard").text)["requests"]) == 1
    rows = dev.get("/dashboard/requests", htmx=True).text
    assert rows.lstrip().startswith("<tr") and all(rid in rows for rid in mine) and theirs not in rows

    detail = dev.get(f"/dashboard/requests/{mine[0]}")
    assert detail.status_code == 200 and mine[0] in detail.text and "test/fake-gpt" in detail.text
    for rid in (theirs, org_only, "no-such-request", "x" * 5000):
        assert dev.get(f"/dashboard/requests/{rid}").status_code == 404, rid


def test_credits_log_for_admins_own_spend_for_members_and_a_top_up_request(gateway):
    alpha = gateway.new_org("alpha", usd=3)
    dev = person(gateway, "alpha", "dev@alpha.example", "member")
    boss = person(gateway, "alpha", "boss@alpha.example", "org-admin")
    page = dev.get("/dashboard").text
    assert 'data-balance>$3.000000' in page and 'id="credit-log"' not in page and "My spend" in page
    assert 'id="credit-log"' in boss.get("/dashboard").text

    # the caps on their requests, with what is left (as the gate counts it)
    console = admin(gateway)
    with db.session_scope() as s:
        dev_id = s.scalar(select(User.id).where(User.email == "dev@alpha.example"))
    console.post(f"/admin/users/{dev_id}/cap", {"weekly_cap": "2"}, htmx=True)
    console.post("/admin/orgs/budget", {"org": alpha.id, "amount": "9", "window": "month", "action": "set"}, htmx=True)
    gateway.flush()
    page = html.unescape(dev.get("/dashboard").text)
    assert re.search(r'data-budget="you"><span>Your weekly cap, left</span>\s*<strong>\$2.000000</strong>', page)
    assert re.search(r"data-budget=\"your org\"><span>Your org's monthly cap, left</span>\s*<strong>\$9.000000", page)

    r = dev.post("/dashboard/topup", {"amount": "20", "note": "PO 4411"}, htmx=True)
    assert "Asked for $20.000000" in r.text and 'data-status="pending"' in r.text
    with db.session_scope() as s:
        req = s.scalar(select(TopupRequest))
        assert (req.org_id, req.amount_micros, req.note, req.requested_by) == (
            alpha.id, 20_000_000, "PO 4411", "dev@alpha.example")
    credits = console.get("/admin/credits").text
    assert f'data-topup="{req.id}" data-status="pending"' in credits and "PO 4411" in credits
    console.post(f"/admin/credits/requests/{req.id}", {"decision": "approve"}, htmx=True)
    assert gateway.org("alpha").credits_micros == 23_000_000
    page = dev.get("/dashboard").text
    assert f'data-topup="{req.id}" data-status="approved"' in page and "data-balance>$23.000000" in page
    assert "top-up request" in boss.get("/dashboard").text  # in the org's credit log, with its reason


def test_the_pricing_preview_matches_the_quote_api(gateway):
    dev = person(gateway, "default", "dev@default.example", "member")
    body = {"model": "test/fake-gpt", "messages": [{"role": "user", "content": "price this prompt please"}],
            "max_tokens": 50}
    api = gateway.post("/v1/account/quote", body).json()
    r = dev.post("/dashboard/quote", {"model": "test/fake-gpt", "prompt": "price this prompt please",
                                      "max_tokens": "50"}, htmx=True)
    assert r.status_code == 200 and 'id="quote-result"' in r.text
    assert f"data-charge>${api['estimated_charge_usd']}<" in r.text
    assert f"{api['estimated_input_tokens']} in, up to 50 out" in r.text


def test_hostile_dashboard_forms_get_a_message_or_400(gateway):
    dev = person(gateway, "default", "dev@default.example", "member")
    cases = [
        ("/dashboard/quote", {"model": "test/fake-gpt", "prompt": "x", "max_tokens": "abc"}, "whole number"),
        ("/dashboard/quote", {"model": "test/fake-gpt", "prompt": "x", "max_tokens": "9" * 40}, "whole number"),
        ("/dashboard/quote", {"model": "test/fake-gpt", "prompt": "x" * 30_000}, "at most 20,000"),
        ("/dashboard/quote", {"model": "no/such-model", "prompt": "x"}, "does not exist"),
        ("/dashboard/quote", {"prompt": "x"}, "Choose a model."),
        ("/dashboard/topup", {"amount": "NaN"}, "is not an amount"),
        ("/dashboard/topup", {"amount": "-5"}, "must be positive"),
        ("/dashboard/topup", {"amount": "1e40"}, "at most"),
        ("/dashboard/topup", {"amount": "5", "note": "n" * 5000}, "at most 500"),
        ("/dashboard/keys", {"name": "n" * 5000, "scope": "inference"}, "at most 120"),
        ("/dashboard/keys", {"name": "x", "scope": ["inference", "admin"]}, None),
    ]
    for path, data, says in cases:
        r = dev.post(path, data, htmx=True)
        assert r.status_code == 200, (path, r.status_code)
        if says:
            assert says in html.unescape(r.text), (path, says, r.text[:500])
    with db.session_scope() as s:
        assert s.scalar(select(func.count()).select_from(TopupRequest)) == 0
    for _ in range(10):
        dev.post("/dashboard/topup", {"amount": "1"}, htmx=True)
    assert "requests waiting" in dev.post("/dashboard/topup", {"amount": "1"}, htmx=True).text
    assert dev.post("/dashboard/keys/" + "9" * 30 + "/revoke", {}).status_code == 404  # no row, not a 500
    for path in ("/dashboard/keys", "/dashboard/topup", "/dashboard/quote", "/dashboard/keys/1/revoke"):
        assert dev.http.post(gateway.url + path, data={"amount": "1", "name": "x"}).status_code == 400, path


def test_a_super_admin_picks_an_org_to_look_at(gateway):
    alpha = gateway.new_org("alpha", usd=4)
    console = admin(gateway)
    page = console.get("/dashboard").text
    assert '<select name="org"' in page and "belongs to no org" in page and "data-balance" not in page
    assert "data-balance" not in console.get("/dashboard?org=" + "9" * 30).text
    page = console.get(f"/dashboard?org={alpha.id}").text
    assert "data-balance>$4.000000" in page and 'id="credit-log"' in page and 'id="topup"' not in page
    r = console.post("/dashboard/keys", {"name": "x"}, htmx=True)
    assert "belong to no org" in r.text


def test_features_offered_by_the_operator_are_listed_and_switched_by_the_orgs_admins(gateway):
    """services/features.py behind the dashboard: what a super-admin opens to self-service is listed;
    the org's admins switch it for the org's requests, members only see it."""
    from gateway.services import features

    class Root:
        email, is_superadmin, org_id, role = "root@ops.example", True, None, "super-admin"

    dev = person(gateway, "default", "dev@default.example", "member")
    boss = person(gateway, "default", "boss@default.example", "org-admin")
    assert "No savings features are offered" in dev.get("/dashboard").text
    r = boss.post("/dashboard/features", {"layer": "exact_cache", "on": "0"}, htmx=True)
    assert "not open to self-service" in r.text  # nothing offered yet

    with db.write_lock, db.session_scope() as s:
        features.put_allowed(s, Root(), ["exact_cache"])
    gateway.flush()
    page = dev.get("/dashboard").text
    assert 'data-feature="exact_cache" data-on="yes"' in page and "Turn off</button>" not in page
    assert dev.post("/dashboard/features", {"layer": "exact_cache", "on": "0"}).status_code == 403
    assert features.choices(gateway.org().id) == {}
    assert "Turn off</button>" in boss.get("/dashboard").text
    r = boss.post("/dashboard/features", {"layer": "exact_cache", "on": "0"}, htmx=True)
    assert "exact_cache: off for default" in r.text and 'data-on="no"' in r.text
    assert features.choices(gateway.org().id) == {"exact_cache": False}
    r = boss.post("/dashboard/features", {"layer": "x" * 500, "on": "1"}, htmx=True)
    assert r.status_code == 200 and "Unknown feature" in r.text
    assert features.choices(gateway.org().id) == {"exact_cache": False}
