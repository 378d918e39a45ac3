"""The Savings console over real HTTP: the report (scoped per org) and per-org / per-app layer
settings that change what the next request does, and for that org only."""

import re
from decimal import Decimal

import requests
from sqlalchemy import select

from gateway import db
from gateway.crypto import digest
from gateway.ledger.pricing import usd
from gateway.memo import MEMO
from gateway.models import App, AuditLog, SavingsOverride
from gateway.pipeline import savings
from gateway.pipeline.context import RequestContext
from gateway.services import tenancy
from tests.test_console import csrf_of, login, org_admin

MSG = [{"role": "user", "content": "what is the capital of France?"}]


def total(html: str, name: str) -> str:
    return re.search(rf'data-total="{name}"><span>[^<]*</span><strong>\$?([^<%]+)%?</strong>', html).group(1)


def mechanism_saved(html: str, mechanism: str) -> str:
    row = re.search(rf'<tr data-mechanism="{mechanism}">(.*?)</tr>', html, re.S).group(1)
    return re.findall(r'<td class="num">\$([^<]+)</td>', row)[0]


def some_traffic(gateway, key=None) -> None:
    sdk = gateway.sdk(key)
    for model in ("test/fake-gpt", "test/fake-cached", "test/error-500"):
        sdk.chat.completions.create(model=model, messages=MSG)
    gateway.flush()


def test_a_superadmin_sees_every_org_and_can_pick_one(gateway):
    gateway.new_org("bravo")
    some_traffic(gateway)
    some_traffic(gateway, gateway.new_key("bravo"))
    rows = gateway.rows()
    bravo_id = gateway.org("bravo").id
    bravo_rows = [r for r in rows if r.org_id == bravo_id]
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    page = s.get(gateway.url + "/admin/savings")
    assert page.status_code == 200 and 'href="/admin/savings"' in page.text
    assert total(page.text, "saved") == usd(sum(r.saved_micros for r in rows))
    assert total(page.text, "benchmark") == usd(sum(r.benchmark_micros for r in rows))
    assert total(page.text, "charge") == usd(sum(r.charge_micros for r in rows))
    assert total(page.text, "requests") == "6"
    percent = 100 * Decimal(sum(r.saved_micros for r in rows)) / sum(r.benchmark_micros for r in rows)
    assert total(page.text, "percent") == f"{percent:.1f}"
    # the provider's own caching is in the benchmark too: no saving of the gateway's
    assert all(r.saved_micros == 0 for r in rows if r.requested_model == "test/fake-cached")
    assert mechanism_saved(page.text, "prompt_cache") == "0.000000"
    assert Decimal(mechanism_saved(page.text, "routing")) > 0
    assert 'data-model="test/error-500"' in page.text and 'class="bar' in page.text
    # htmx filter: one org, one model; the report partial only
    part = s.get(gateway.url + "/admin/savings", params={"org": bravo_id, "model": "test/fake-cached"},
                 headers={"HX-Request": "true"})
    assert "<html" not in part.text and "HX-Request" in part.headers["Vary"]
    (bravo_cached,) = [r for r in bravo_rows if r.requested_model == "test/fake-cached"]
    assert total(part.text, "saved") == usd(bravo_cached.saved_micros) and total(part.text, "requests") == "1"
    assert 'data-model="test/fake-gpt"' not in part.text


def test_an_org_admin_sees_only_its_own_org(gateway):
    gateway.new_org("alpha")
    gateway.new_org("bravo")
    some_traffic(gateway, gateway.new_key("alpha"))
    gateway.sdk(gateway.new_key("bravo")).chat.completions.create(model="test/fake-cached", messages=MSG)
    gateway.flush()
    alpha_rows = gateway.rows(org_id=gateway.org("alpha").id)
    org_admin(gateway, "alpha", "a@alpha.example")
    s, _ = login(gateway, "a@alpha.example", "password-123")
    for params in ({}, {"org": gateway.org("bravo").id}, {"org": gateway.org("default").id}):
        page = s.get(gateway.url + "/admin/savings", params=params)
        assert page.status_code == 200
        assert total(page.text, "saved") == usd(sum(r.saved_micros for r in alpha_rows))
        assert total(page.text, "requests") == "3"
        assert "bravo" not in page.text and 'name="org"' not in page.text


# ---- settings ----------------------------------------------------------------------------------------

def ctx_for(key: str) -> RequestContext:
    return RequestContext("chat.completions", "openai", b"", {}, key, principal=MEMO.principal(digest(key)))


def cache_of(gateway, key: str) -> str:
    raw = gateway.sdk(key).chat.completions.with_raw_response.create(model="test/fake-gpt", messages=MSG,
                                                                     temperature=0)  # cacheable
    return raw.headers["x-gateway-cache"]


def layer_form(s: requests.Session, gateway, **params) -> str:
    return s.get(gateway.url + "/admin/savings/settings", params=params).text


def save(s: requests.Session, gateway, org_id: int, layer: str, app_id=None, htmx=True, reset=False,
         **values) -> requests.Response:
    token = csrf_of(s.get(gateway.url + "/admin/savings").text)
    data = {"csrf_token": token, "org": org_id, "app": app_id or "", "layer": layer, **values}
    path = "/admin/savings/settings/reset" if reset else "/admin/savings/settings"
    r = s.post(gateway.url + path, data=data, headers={"HX-Request": "true"} if htmx else {})
    gateway.flush()  # the writer's sync reloads the announced policy, as every process does
    return r


def test_turning_a_layer_off_for_one_org_changes_its_next_request_only(gateway, fake_openai):
    gateway.new_org("alpha")
    gateway.new_org("bravo")
    alpha, bravo = gateway.new_key("alpha"), gateway.new_key("bravo")
    org_admin(gateway, "alpha", "a@alpha.example")
    alpha_id = gateway.org("alpha").id
    for key in (alpha, bravo):  # exact_cache is on by default: the second identical request is a hit
        assert [cache_of(gateway, key), cache_of(gateway, key)] == ["miss", "hit"]

    s, _ = login(gateway, "a@alpha.example", "password-123")
    r = save(s, gateway, alpha_id, "exact_cache", enabled="off", ttl_seconds="60")
    assert r.status_code == 200 and r.headers["HX-Trigger"] == "savings-changed" and "Saved" in r.text
    assert re.search(r'data-knob="enabled">\s*<td><code>enabled</code></td>\s*<td data-value>off</td>',
                     r.text)
    assert savings.settings(ctx_for(alpha), "exact_cache")["enabled"] is False
    assert savings.settings(ctx_for(alpha), "exact_cache")["ttl_seconds"] == 60
    assert savings.settings(ctx_for(bravo), "exact_cache") == {**savings.DEFAULTS["exact_cache"]}
    calls = len(fake_openai.requests)
    assert cache_of(gateway, alpha) == "miss" and len(fake_openai.requests) == calls + 1
    assert cache_of(gateway, bravo) == "hit" and len(fake_openai.requests) == calls + 1

    page = layer_form(s, gateway)
    assert "overridden for org alpha" in page and "bravo" not in page
    assert save(s, gateway, alpha_id, "exact_cache", reset=True).status_code == 200
    assert savings.settings(ctx_for(alpha), "exact_cache")["enabled"] is True
    assert cache_of(gateway, alpha) == "hit"
    with db.session_scope() as session:
        assert session.scalars(select(SavingsOverride)).all() == []
        actions = [a.action for a in session.scalars(select(AuditLog).where(AuditLog.action.like("savings.%"))
                                                     .order_by(AuditLog.id))]
    assert actions == ["savings.create", "savings.reset"]


def test_an_app_override_applies_to_that_apps_keys(gateway, fake_openai):
    gateway.new_org("alpha")
    org_key = gateway.new_key("alpha")
    with db.write_lock, db.session_scope() as s:
        org = tenancy.org_by_name(s, "alpha")
        app = App(org_id=org.id, name="web")
        s.add(app)
        s.flush()
        app_id, alpha_id = app.id, org.id
        app_key = tenancy.create_key(s, org, name="web", actor="test", app_id=app_id).secret
    gateway.flush()
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    assert f'value="{app_id}"' in layer_form(s, gateway, org=alpha_id)
    r = save(s, gateway, alpha_id, "output_budget", app_id=app_id, default_max_tokens="64")
    assert "Saved" in r.text
    assert savings.settings(ctx_for(app_key), "output_budget")["default_max_tokens"] == 64
    assert savings.settings(ctx_for(org_key), "output_budget")["default_max_tokens"] is None
    # the app inherits the org's switch, and an app override wins over it
    save(s, gateway, alpha_id, "exact_cache", enabled="off")
    save(s, gateway, alpha_id, "exact_cache", app_id=app_id, enabled="on")
    assert [cache_of(gateway, app_key), cache_of(gateway, app_key)] == ["miss", "hit"]
    assert cache_of(gateway, org_key) == "miss"
    page = layer_form(s, gateway, org=alpha_id, app=app_id)
    assert "overridden for app web" in page


def test_bad_values_get_a_clear_error_and_change_nothing(gateway):
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    org_id = gateway.org().id
    r = save(s, gateway, org_id, "exact_cache", ttl_seconds="-5")
    assert r.status_code == 200 and "exact_cache.ttl_seconds: &#39;-5&#39; is not valid" in r.text
    assert 'value="-5"' in r.text  # what was typed stays in the form
    r = save(s, gateway, org_id, "semantic_cache", htmx=False, threshold="1.5")
    assert r.status_code == 422 and "semantic_cache.threshold" in r.text and "at most 1" in r.text
    r = save(s, gateway, org_id, "compression", mode="shrink")
    assert "compression.mode: &#39;shrink&#39; is not one of: summary, trim" in r.text
    r = save(s, gateway, org_id, "compression", summary_model="test/nope")
    assert "unknown model &#39;test/nope&#39;" in r.text
    with db.session_scope() as session:
        assert session.scalars(select(SavingsOverride)).all() == []


def test_org_admins_change_only_their_own_org_and_not_billing_knobs(gateway):
    gateway.new_org("alpha")
    gateway.new_org("bravo")
    org_admin(gateway, "alpha", "a@alpha.example")
    s, _ = login(gateway, "a@alpha.example", "password-123")
    alpha_id, bravo_id = gateway.org("alpha").id, gateway.org("bravo").id
    assert save(s, gateway, bravo_id, "exact_cache", enabled="off").status_code == 403
    assert s.get(gateway.url + "/admin/savings/settings", params={"org": bravo_id}).status_code == 403
    # a shared cache scope would read other orgs' answers: super-admins only
    assert save(s, gateway, alpha_id, "exact_cache", shared_scope="everyone").status_code == 403
    assert save(s, gateway, alpha_id, "semantic_cache", shared_scope="everyone").status_code == 403
    assert save(s, gateway, alpha_id, "exact_cache", charge="free").status_code == 403
    assert "super-admin only" in layer_form(s, gateway)
    with db.session_scope() as session:
        assert session.scalars(select(SavingsOverride)).all() == []
    # a super-admin's billing knob survives the org admin's own edits and reset
    admin, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    save(admin, gateway, alpha_id, "exact_cache", charge="full")
    save(s, gateway, alpha_id, "exact_cache", ttl_seconds="30")
    save(s, gateway, alpha_id, "exact_cache", reset=True)
    with db.session_scope() as session:
        (row,) = session.scalars(select(SavingsOverride)).all()
    assert row.settings == {"charge": "full"}


def test_settings_need_the_csrf_token(gateway):
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    r = s.post(gateway.url + "/admin/savings/settings",
               data={"org": gateway.org().id, "layer": "exact_cache", "enabled": "off"})
    assert r.status_code == 400
