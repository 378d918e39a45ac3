"""Spend you can govern: holds that never overdraw, the credit log, pricing policy, budgets."""

import json
from datetime import timedelta

import anthropic
import openai
import pytest
import requests
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer
from sqlalchemy import func, select

from gateway import db
from gateway.ledger.pricing import usd_to_micros
from gateway.models import CreditTransaction, LedgerEntry, Org, utcnow
from gateway.services import budgets, credits, tenancy
from gateway.stores.counters import COUNTERS, previous_start, window_start
from tests.conftest import chat_calls, wait_for
from tests.test_routing_console import admin

MSG = [{"role": "user", "content": "hello there"}]
CHEAP = "test/cheap"  # $100 in / $200 out per Mtok: 5 prompt tokens + 1 output token = 700 micros


def chat(gw, key, model=CHEAP, max_tokens=1, **kw):
    return gw.post("/v1/chat/completions", {"model": model, "messages": MSG, "max_tokens": max_tokens, **kw},
                   key=key)


def spent_in_ledger(org_id: int) -> int:
    with db.session_scope() as s:
        return int(s.scalar(select(func.coalesce(func.sum(LedgerEntry.charge_micros), 0))
                            .where(LedgerEntry.org_id == org_id)))


def org_named(name: str) -> Org:
    with db.session_scope() as s:
        return tenancy.org_by_name(s, name)


def test_200_concurrent_requests_never_overdraw_a_cent(gateway, fake_openai):
    """$0.01 and 200 requests at once: each holds its worst case (prompt bound + max_tokens) before
    the upstream is asked, so the balance never goes below zero, the refused ones never reach the
    upstream, and what was charged is exactly what the balance lost (and what the credit log says)."""
    gateway.new_org("tiny", usd=0.01)
    key = gateway.new_key("tiny")
    org = org_named("tiny")
    calls_before = chat_calls(fake_openai)

    statuses = Pool(200).map(lambda _: chat(gateway, key).status_code, range(200))
    gateway.flush()

    served = statuses.count(200)
    assert served >= 1 and statuses.count(402) == 200 - served
    assert chat_calls(fake_openai) - calls_before == served  # a refused request costs no upstream call
    balance = org_named("tiny").credits_micros
    assert balance >= 0
    assert spent_in_ledger(org.id) == usd_to_micros(0.01) - balance == served * 700
    assert COUNTERS.holds.get(org.id, 0) == 0  # no hold outlives its request
    with db.session_scope() as s:
        assert credits.derived_balance(s, org.id) == balance


def test_a_402_is_in_each_dialect_and_names_the_hold(gateway_factory, fake_anthropic):
    gw = gateway_factory()
    gw.new_org("small", usd=0.001)
    key = gw.new_key("small")
    with pytest.raises(openai.APIStatusError) as e:
        gw.sdk(key).chat.completions.create(model=CHEAP, messages=MSG, max_tokens=1000)
    assert e.value.status_code == 402 and e.value.body["code"] == "insufficient_credits"
    assert "max_tokens" in e.value.body["message"]
    client = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as e:
        client.messages.create(model="anthropic-test/claude-fake", max_tokens=1000, messages=MSG)
    assert e.value.status_code == 402 and e.value.body["error"]["type"] == "billing_error"


def test_holds_settle_on_upstream_error_and_on_a_cut_stream(gateway):
    org = org_named("default")
    r = chat(gateway, gateway.api_key, model="test/error-400")
    assert r.status_code == 400
    with requests.post(gateway.v1 + "/chat/completions", stream=True,
                       json={"model": "test/drip-100", "messages": MSG, "stream": True},
                       headers={"Authorization": f"Bearer {gateway.api_key}"}) as resp:
        next(resp.iter_content(16))  # the client goes away mid-stream
    wait_for(lambda: len(gateway.rows(org_id=org.id)) == 2)
    assert COUNTERS.holds.get(org.id, 0) == 0
    assert COUNTERS.spent(("org", org.id), "day", window_start("day", utcnow())) == spent_in_ledger(org.id)


def test_credit_log_refund_and_adjust_by_cli_keep_the_balance_derivable(gateway):
    gateway.new_org("acme", usd=5)
    key = gateway.new_key("acme")
    for _ in range(3):
        assert chat(gateway, key).status_code == 200
    gateway.flush()
    assert "credits $6.000000" not in gateway.cli("credits", "refund", "--org", "acme", "--usd", "1",
                                                  "--reason", "outage on the 3rd").stdout
    gateway.cli("credits", "adjust", "--org", "acme", "--usd", "-0.5", "--reason", "duplicate top-up")
    gateway.flush()
    org = org_named("acme")
    assert org.credits_micros == 5_000_000 - 3 * 700 + 1_000_000 - 500_000
    with db.session_scope() as s:
        assert credits.derived_balance(s, org.id) == org.credits_micros
        kinds = [(t.kind, t.debit, t.credit, t.amount_micros, t.reason) for t in
                 s.scalars(select(CreditTransaction).where(CreditTransaction.org_id == org.id)
                           .order_by(CreditTransaction.id))]
    assert kinds[0][:4] == ("topup", "funding", "org", 5_000_000)
    assert ("charge", "org", "usage") == kinds[1][:3] and sum(k[3] for k in kinds if k[0] == "charge") == 2100
    assert kinds[-2] == ("refund", "usage", "org", 1_000_000, "outage on the 3rd")
    assert kinds[-1] == ("adjustment", "org", "adjustment", 500_000, "duplicate top-up")
    log = gateway.cli("credits", "log", "--org", "acme").stdout
    assert "refund\t1.000000" in log and "adjustment\t-0.500000" in log
    out = gateway.cli("credits", "refund", "--org", "acme", "--usd", "1", "--reason", " ", check=False)
    assert out.returncode == 1 and "needs a reason" in out.stderr


@pytest.mark.parametrize("policy, percent, fee, expected", [
    ("list", None, 0, 700), ("markup", "10", 0, 770), ("discount", "25", 0, 525), ("byok", None, 3, 3),
])
def test_pricing_policy_sets_the_charge_header_and_the_ledger(gateway, policy, percent, fee, expected):
    gateway.new_org("acme", usd=5)
    key = gateway.new_key("acme")
    with db.write_lock, db.session_scope() as s:
        credits.set_pricing(s, tenancy.org_by_name(s, "acme"), policy, percent, fee)
    gateway.flush()
    r = chat(gateway, key)
    assert r.status_code == 200
    assert r.headers["x-gateway-charge"] == f"{expected / 1_000_000:.6f}"
    (row,) = gateway.rows(request_id=r.headers["x-request-id"])
    assert row.charge_micros == expected and row.saved_micros >= 0


def test_ledger_rows_carry_the_user_and_the_app(gateway):
    with db.write_lock, db.session_scope() as s:
        org = tenancy.org_by_name(s, "default")
        user = tenancy.create_user(s, org, "dev@example.com").user
        app = tenancy.create_app(s, org, "etl")
        user_key = tenancy.create_key(s, org, user_id=user.id).secret
        app_key = tenancy.create_key(s, org, app_id=app.id).secret
        ids = user.id, app.id
    gateway.flush()
    a, b = chat(gateway, user_key), chat(gateway, app_key)
    (ra,) = gateway.rows(request_id=a.headers["x-request-id"])
    (rb,) = gateway.rows(request_id=b.headers["x-request-id"])
    assert (ra.user_id, ra.app_id, rb.user_id, rb.app_id) == (ids[0], None, None, ids[1])


# ---- budgets -----------------------------------------------------------------------------------

def _target(kind: str, org, user=None, app=None, key_id=None):
    return budgets.Target(org, kind, {"org": org.id, "user": user, "app": app, "key": key_id}[kind], kind)


@pytest.mark.parametrize("window", ["day", "week", "month"])
@pytest.mark.parametrize("on", ["org", "user", "app", "key"])
def test_hard_budget_refuses_before_the_upstream_once_spent(gateway, fake_openai, window, on):
    """A $0.007 cap: each call holds about $0.0055 and costs $0.0007, so a few are served, then a 429
    `budget_exceeded` before any upstream call; what was spent never passes the cap."""
    with db.write_lock, db.session_scope() as s:
        org = tenancy.create_org(s, "acme", usd_to_micros(5))
        user = tenancy.create_user(s, org, "dev@example.com").user
        app = tenancy.create_app(s, org, "etl")
        k = tenancy.create_key(s, org, user_id=user.id if on == "user" else None,
                               app_id=app.id if on == "app" else None)
        budgets.set_budget(s, _target(on, org, user.id, app.id, k.key.id), 7000, window)
        key, org_id = k.secret, org.id
    gateway.flush()
    served = 0
    while (r := chat(gateway, key)).status_code == 200:
        served += 1
        assert float(r.headers["x-gateway-budget-remaining"]) <= 0.007
    calls = chat_calls(fake_openai)
    assert r.status_code == 429 and r.json()["error"]["code"] == "budget_exceeded"
    assert int(r.headers["retry-after"]) > 0
    assert chat(gateway, key).status_code == 429 and chat_calls(fake_openai) == calls
    gateway.flush()
    assert served >= 1 and spent_in_ledger(org_id) == served * 700 <= 7000


def test_hard_budget_in_anthropic_shape(gateway_factory, fake_anthropic):
    gw = gateway_factory()
    with db.write_lock, db.session_scope() as s:
        org = tenancy.org_by_name(s, "default")
        budgets.set_budget(s, _target("org", org), 1, "day")
    gw.flush()
    r = requests.post(gw.url + "/v1/messages", json={"model": "anthropic-test/claude-fake", "max_tokens": 5,
                                                     "messages": MSG},
                      headers={"x-api-key": gw.api_key, "anthropic-version": "2023-06-01"})
    assert r.status_code == 429 and r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "rate_limit_error" and "budget" in r.json()["error"]["message"]


@pytest.fixture
def webhook():
    posts = []

    def app(environ, start_response):
        posts.append(environ["wsgi.input"].read().decode())
        start_response("204 No Content", [])
        return [b""]

    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", posts
    server.stop()


@pytest.mark.parametrize("window", ["day", "week", "month"])
def test_soft_budget_alerts_once_per_threshold_and_still_serves(gateway_factory, webhook, window):
    url, posts = webhook
    gw = gateway_factory(budget_webhook_url=url)
    with db.write_lock, db.session_scope() as s:
        org = tenancy.create_org(s, "acme", usd_to_micros(5))
        budgets.set_budget(s, _target("org", org), 1000, window, hard=False)
        key = tenancy.create_key(s, org).secret
        org_id = org.id
    gw.flush()
    assert chat(gw, key).status_code == 200  # 70%: the 50% alert
    wait_for(lambda: len(posts) == 1)
    for _ in range(3):  # 140%, 210%, 280%: soft, so served; 80% and 100% alert once each
        r = chat(gw, key)
        assert r.status_code == 200 and r.headers["x-gateway-budget-remaining"] == "0.000000"
    wait_for(lambda: len(posts) == 3)
    sent = [json.loads(p) for p in posts]
    assert sorted(p["threshold_percent"] for p in sent) == [50, 80, 100]
    assert {(p["type"], p["window"], p["on"], p["cap_usd"]) for p in sent} == {("budget.threshold", window, "org", 0.001)}
    with db.session_scope() as s:
        alerts = budgets.alerts(s, [org_id])
        assert sorted(a.threshold for a in alerts) == [50, 80, 100]
        assert budgets.alerts(s, [org_id + 1000]) == []
    banner = admin(gw).get("/admin/orgs").text  # the console's banner, for the org and the threshold
    assert banner.count("budget-alert") == 3 and "acme" in banner and "100% reached" in banner


@pytest.mark.parametrize("window", ["day", "week", "month"])
def test_rollover_carries_what_the_last_window_left_at_most_one_cap(gateway, window):
    now = utcnow()
    previous = previous_start(window, window_start(window, now)) + timedelta(minutes=1)
    acme = gateway.new_org("acme", usd=5)
    rival = gateway.new_org("rival", usd=5)
    with db.write_lock, db.session_scope() as s:
        for org_id, micros in ((acme.id, 3000), (rival.id, 20000)):
            s.add(LedgerEntry(request_id=f"req_prev_{org_id}", org_id=org_id, endpoint="chat.completions",
                              status=200, charge_micros=micros, created_at=previous))
        budgets.set_budget(s, _target("org", acme), 10_000, window, rollover=True)
        budgets.set_budget(s, _target("org", rival), 10_000, window, rollover=True)
        acme_key = tenancy.create_key(s, acme).secret
        rival_key = tenancy.create_key(s, rival).secret
    with db.session_scope() as s:
        budgets.seed_spend(s, COUNTERS)  # as at start: window spend from the ledger, once
    gateway.flush()
    # acme: 10000 cap + 7000 left unused last window - 700 now; rival overspent last window: no carry
    assert chat(gateway, acme_key).headers["x-gateway-budget-remaining"] == "0.016300"
    assert chat(gateway, rival_key).headers["x-gateway-budget-remaining"] == "0.009300"
    with db.write_lock, db.session_scope() as s:
        budgets.set_budget(s, _target("org", acme), 10_000, window, rollover=False)
    gateway.flush()
    assert chat(gateway, acme_key).headers["x-gateway-budget-remaining"] == "0.008600"
    with db.write_lock, db.session_scope() as s:  # nothing spent last window: at most one cap carries
        budgets.set_budget(s, _target("org", acme), 10_000, window, rollover=True)
        s.query(LedgerEntry).filter(LedgerEntry.request_id == f"req_prev_{acme.id}").delete()
    gateway.flush()  # the calls so far are in the ledger
    with db.session_scope() as s:
        budgets.seed_spend(s, COUNTERS)
    gateway.flush()
    assert chat(gateway, acme_key).headers["x-gateway-budget-remaining"] == "0.017900"


def test_budget_cli_set_list_clear_and_tenancy(gateway):
    gateway.cli("org", "create", "acme", "--credits", "5")
    gateway.cli("org", "create", "rival", "--credits", "5")
    password = gateway.cli("user", "create", "--org", "acme", "--email", "dev@acme.io", "--weekly-cap", "2").stdout
    assert len(password.strip()) >= 12
    gateway.cli("app", "create", "--org", "acme", "--slug", "etl", "--name", "ETL", "--contact", "ops@acme.io")
    gateway.cli("user", "create", "--org", "rival", "--email", "spy@rival.io")
    out = gateway.cli("budget", "set", "--org", "acme", "--usd", "10", "--window", "month", "--soft", "--rollover")
    assert "$10.000000 per month, soft, rollover" in out.stdout
    gateway.cli("budget", "set", "--org", "acme", "--app", "etl", "--usd", "1", "--window", "day")
    listing = gateway.cli("budget", "list", "--org", "acme").stdout.splitlines()
    assert sorted(listing) == sorted(["org\tacme\t10.000000\tmonth\tsoft\trollover",
                                      "user\tdev@acme.io\t2.000000\tweek\thard\t-",
                                      "app\tetl\t1.000000\tday\thard\t-"])
    assert gateway.cli("budget", "list", "--org", "rival").stdout == ""  # an org never sees another's
    refused = gateway.cli("budget", "set", "--org", "acme", "--user", "spy@rival.io", "--usd", "1",
                          "--window", "day", check=False)
    assert refused.returncode == 1 and "no user spy@rival.io in org acme" in refused.stderr
    refused = gateway.cli("budget", "set", "--org", "acme", "--app", "etl", "--usd", "1", "--window", "year",
                          check=False)
    assert refused.returncode == 2
    assert "cleared" in gateway.cli("budget", "clear", "--org", "acme", "--app", "etl").stdout
    assert "no budget" in gateway.cli("budget", "clear", "--org", "acme", "--app", "etl").stdout
    assert len(gateway.cli("budget", "list", "--org", "acme").stdout.splitlines()) == 2


def test_disabling_a_user_or_an_app_makes_its_keys_401_on_a_running_server(gateway):
    gateway.cli("org", "create", "acme", "--credits", "5")
    gateway.cli("user", "create", "--org", "acme", "--email", "dev@acme.io")
    gateway.cli("app", "create", "--org", "acme", "--slug", "etl")
    user_key = gateway.cli("key", "create", "--org", "acme", "--user", "dev@acme.io").stdout.strip()
    app_key = gateway.cli("key", "create", "--org", "acme", "--app", "etl").stdout.strip()
    wait_for(lambda: chat(gateway, user_key).status_code == 200 and chat(gateway, app_key).status_code == 200)
    gateway.cli("user", "disable", "--org", "acme", "--email", "dev@acme.io")
    wait_for(lambda: chat(gateway, user_key).status_code == 401)
    assert chat(gateway, app_key).status_code == 200
    gateway.cli("app", "disable", "--org", "acme", "--slug", "etl")
    wait_for(lambda: chat(gateway, app_key).status_code == 401)
    r = chat(gateway, app_key)
    assert r.json()["error"]["code"] == "invalid_api_key"
    gateway.cli("user", "enable", "--org", "acme", "--email", "dev@acme.io")
    wait_for(lambda: chat(gateway, user_key).status_code == 200)
    both = gateway.cli("key", "create", "--org", "acme", "--user", "dev@acme.io", "--app", "etl", check=False)
    assert both.returncode == 1 and "not both" in both.stderr
    other = gateway.cli("key", "create", "--org", "default", "--app", "etl", check=False)
    assert other.returncode == 1 and "no app 'etl' in org default" in other.stderr


def test_holds_budgets_and_limits_read_memory_only(gateway):
    """With a plan, budgets on every level and a pricing policy, a request still makes no database
    statement of its own: everything the gate checks is in memory."""
    from gateway.services import plans
    from tests.conftest import database_statements

    with db.write_lock, db.session_scope() as s:
        org = tenancy.org_by_name(s, "default")
        plan = plans.upsert(s, {"name": "p", "rpm": 100, "tpm": 100_000, "key_rpm": 100, "key_tpm": 100_000})
        plans.set_org_plan(s, org, plan)
        credits.set_pricing(s, org, "markup", "5")
        budgets.set_budget(s, _target("org", org), 1_000_000, "day")
        budgets.set_budget(s, _target("org", org), 1_000_000, "week", hard=False)  # replaces the day one
    gateway.flush()
    with database_statements() as statements:
        r = chat(gateway, gateway.api_key)
        assert r.status_code == 200 and "x-gateway-budget-remaining" in r.headers
        assert "x-ratelimit-remaining-requests" in r.headers
    assert statements == []


def test_console_budgets_stay_inside_the_org(gateway):
    from tests.test_routing_console import org_console

    rival = gateway.new_org("rival", usd=5)
    with db.write_lock, db.session_scope() as s:
        tenancy.create_user(s, tenancy.org_by_name(s, "rival"), "spy@rival.io")
        budgets.set_budget(s, _target("org", rival), 5_000_000, "month")
        default = tenancy.org_by_name(s, "default")
        tenancy.create_user(s, default, "dev@default.io")
    gateway.flush()
    console = org_console(gateway, "default")
    r = console.post("/admin/orgs/budget", {"org": str(default.id), "user": "dev@default.io", "amount": "3",
                                            "window": "week", "action": "set"}, htmx=True)
    assert "Budget on user dev@default.io: $3.000000 per week" in r.text
    assert 'data-budget="user:dev@default.io"' in r.text and "rival" not in r.text
    r = console.post("/admin/orgs/budget", {"org": str(default.id), "user": "spy@rival.io", "amount": "3",
                                            "window": "week", "action": "set"}, htmx=True)
    assert "No user spy@rival.io in org default" in r.text
    assert console.status("/admin/orgs/budget", org=str(rival.id), amount="1", window="day", action="set") == 403
    r = console.post("/admin/orgs/budget", {"org": str(default.id), "amount": "1", "window": "year",
                                            "action": "set"}, htmx=True)
    assert "Window must be one of day, week, month" in r.text
    page = admin(gateway).get("/admin/budgets").text
    assert 'data-budget="org:"' in page and 'data-budget="user:dev@default.io"' in page
    with db.session_scope() as s:
        assert [v.kind for v in budgets.list_budgets(s, rival.id)] == ["org"]
