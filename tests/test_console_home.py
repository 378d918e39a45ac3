"""Home, Per-user usage, Error reports and the activity export over real HTTP: every page per role
(super-admin every org, org-admin their own, a member refused), the live last hour, the 7-day trends
from rollups, first-run guidance and Try a request."""

import re

import openai
import pytest
import requests
from sqlalchemy import select

from gateway import db
from gateway.ledger.live import LIVE
from gateway.models import AuditLog, Org, User
from gateway.services import tenancy
from tests.test_console import csrf_of, login

MSG = [{"role": "user", "content": "hi"}]
PAGES = ("/admin/", "/admin/usage", "/admin/errors", "/admin/export")


@pytest.fixture(autouse=True)
def _fresh_live():
    LIVE.reset()
    yield
    LIVE.reset()


def add_user(gateway, org: str, email: str, role: str = "org-admin") -> int:
    with db.write_lock, db.session_scope() as s:
        o = s.scalar(select(Org).where(Org.name == org))
        return tenancy.create_admin(s, email, "password-123", org_id=o.id, role=role, actor="test").id


def user_key(gateway, org: str, user_id: int) -> str:
    with db.write_lock, db.session_scope() as s:
        secret = tenancy.create_key(s, tenancy.org_by_name(s, org), name="u", user_id=user_id, actor="test").secret
    gateway.flush()
    return secret


def test_home_is_the_landing_page_with_live_numbers_trends_and_top_users(gateway):
    uid = add_user(gateway, "default", "ann@example.com", role="member")
    key = user_key(gateway, "default", uid)
    sdk = gateway.sdk(key)
    for _ in range(3):
        sdk.chat.completions.create(model="test/fake-gpt", messages=MSG)
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(model="test/error-503", messages=MSG)
    gateway.flush()
    s, r = login(gateway, gateway.admin_email, gateway.admin_password)
    assert r.url.rstrip("/").endswith("/admin")  # sign-in lands on Home
    assert "<h1>Home</h1>" in r.text
    live = s.get(gateway.url + "/admin/home/live", headers={"HX-Request": "true"})
    assert live.status_code == 200
    assert re.search(r'data-requests="4"', live.text)
    assert re.search(r'id="live-errors"><span>Errors</span><strong>1</strong>', live.text)
    assert "p50 / p99" in live.text and "— / —" not in live.text
    home = r.text
    assert 'id="trend-chart"' in home and "uPlot.iife.min.js" in home
    data = re.search(r'<script type="application/json" id="trend-data">(.*?)</script>', home, re.S).group(1)
    import json

    trends = json.loads(data)
    assert len(trends["days"]) == 7
    assert sum(trends["totals"]["charge_micros"]) > 0
    assert "test/fake-gpt" in trends["by_model"] and "fake" in trends["by_provider"]
    assert "ann@example.com" in home.split('id="top-users"')[1].split("</table>")[0]
    assert 'id="first-run"' not in home  # the fake provider has a key


def test_org_admin_sees_only_their_org_on_home_usage_and_errors(gateway):
    gateway.new_org("bravo")
    bravo_user = add_user(gateway, "bravo", "bob@bravo.example", role="member")
    default_user = add_user(gateway, "default", "dee@default.example", role="member")
    add_user(gateway, "bravo", "admin@bravo.example")
    gateway.sdk(user_key(gateway, "bravo", bravo_user)).chat.completions.create(model="test/fake-gpt", messages=MSG)
    sdk = gateway.sdk(user_key(gateway, "default", default_user))
    for _ in range(2):
        sdk.chat.completions.create(model="test/cheap", messages=MSG)
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="test/error-400", messages=MSG)
    gateway.flush()

    s, _ = login(gateway, "admin@bravo.example", "password-123")
    live = s.get(gateway.url + "/admin/home/live").text
    assert 'data-requests="1"' in live  # bravo's one request, not default's three
    home = s.get(gateway.url + "/admin/").text
    trends = home.split('id="trend-models"')[1].split("</table>")[0]
    assert "test/fake-gpt" in trends and "test/cheap" not in trends
    assert "dee@default.example" not in home and "bob@bravo.example" in home
    usage = s.get(gateway.url + "/admin/usage").text
    assert "bob@bravo.example" in usage and "dee@default.example" not in usage
    # asking for another org's data changes nothing
    default_id = gateway.org().id
    assert "dee@default.example" not in s.get(gateway.url + f"/admin/usage?org={default_id}").text
    errors = s.get(gateway.url + "/admin/errors").text
    assert "test/error-400" not in errors

    admin, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    usage = admin.get(gateway.url + "/admin/usage").text
    assert "bob@bravo.example" in usage and "dee@default.example" in usage
    only_default = admin.get(gateway.url + f"/admin/usage?org={default_id}").text
    assert "dee@default.example" in only_default and "bob@bravo.example" not in only_default
    assert 'data-requests="4"' in admin.get(gateway.url + "/admin/home/live").text
    errors = admin.get(gateway.url + "/admin/errors").text
    assert "test/error-400" in errors and "upstream" in errors


@pytest.mark.parametrize("path", PAGES + ("/admin/home/live", "/admin/export.csv?party=org&id=1"))
def test_a_member_is_refused_the_admin_pages(gateway, path):
    add_user(gateway, "default", "mem@example.com", role="member")
    s, _ = login(gateway, "mem@example.com", "password-123")
    r = s.get(gateway.url + path, allow_redirects=False)
    # The console sends a member to their own dashboard, whatever page they ask for.
    assert r.status_code == 302 and r.headers["Location"].endswith("/dashboard"), path
    assert "Live" not in r.text and "dee@" not in r.text


@pytest.mark.parametrize("path", PAGES)
def test_pages_need_a_sign_in(gateway, path):
    r = requests.get(gateway.url + path, allow_redirects=False)
    assert r.status_code == 302 and "/admin/login" in r.headers["Location"]


def test_per_user_usage_drills_down_to_the_users_requests_in_logs(gateway):
    ann = add_user(gateway, "default", "ann@example.com", role="member")
    ben = add_user(gateway, "default", "ben@example.com", role="member")
    a = gateway.sdk(user_key(gateway, "default", ann)).chat.completions.with_raw_response.create(
        model="test/fake-gpt", messages=MSG)
    b = gateway.sdk(user_key(gateway, "default", ben)).chat.completions.with_raw_response.create(
        model="test/fake-gpt", messages=MSG)
    gateway.flush()
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    page = s.get(gateway.url + "/admin/usage?period=24h").text
    row = page.split(f'data-party-id="{ann}"')[1].split("</tr>")[0]
    usage = a.parse().usage
    assert f">{usage.prompt_tokens}<" in row and f">{usage.completion_tokens}<" in row
    assert f"/admin/logs?user={ann}" in row
    logs = s.get(gateway.url + f"/admin/logs?user={ann}").text
    assert a.headers["x-request-id"] in logs and b.headers["x-request-id"] not in logs
    assert "ann@example.com" in logs.split('id="user-filter"')[1][:200]
    part = s.get(gateway.url + "/admin/usage?period=24h&by=app", headers={"HX-Request": "true"})
    assert part.text.lstrip().startswith("<tr") and "No usage by apps" in part.text


def test_first_run_without_a_usable_provider_says_so_and_links_to_providers(gateway):
    from gateway import memo
    from gateway.models import Provider

    with db.write_lock, db.session_scope() as s:  # as a fresh install: a provider, but no key for it
        for p in s.scalars(select(Provider)):
            p.api_key_enc, p.api_key_env = None, None
        memo.announce(s, "catalog")
    gateway.flush()
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    home = s.get(gateway.url + "/admin/").text
    first = home.split('id="first-run"')[1].split("</section>")[0]
    assert "No provider can answer yet" in first
    assert 'href="/admin/providers"' in first and 'href="#try"' in first
    assert ('href="/admin/ollama"' in first) == ("admin.ollama" in gateway.app.view_functions)
    # an org-admin is told whom to ask (Providers is a super-admin's page)
    add_user(gateway, "default", "adm@default.example")
    org_admin, _ = login(gateway, "adm@default.example", "password-123")
    first = org_admin.get(gateway.url + "/admin/").text.split('id="first-run"')[1].split("</section>")[0]
    assert "Ask a super-admin" in first and 'href="/admin/providers"' not in first


def test_try_a_request_makes_a_key_answers_and_shows_curl(gateway):
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    token = csrf_of(s.get(gateway.url + "/admin/").text)
    r = s.post(gateway.url + "/admin/home/try", headers={"HX-Request": "true"},
               data={"csrf_token": token, "model": "test/fake-gpt", "message": "Say hi", "key": ""})
    assert r.status_code == 200
    assert 'id="try-result"' in r.text and 'class="error"' not in r.text
    request_id = re.search(r'data-request-id="([^"]+)"', r.text).group(1)
    key = re.search(r"<pre><code>(gw-[^<]+)</code></pre>", r.text).group(1)
    assert f"curl {gateway.url}/v1/chat/completions" in r.text and f"Bearer {key}" in r.text
    assert gateway.rows(request_id=request_id)[0].status == 200  # an ordinary request, with its ledger row
    # the key works from outside, and the next try reuses it (no second key)
    assert gateway.sdk(key).chat.completions.create(model="test/fake-gpt", messages=MSG).choices
    again = s.post(gateway.url + "/admin/home/try", headers={"HX-Request": "true"},
                   data={"csrf_token": token, "model": "test/fake-gpt", "message": "Again", "key": key})
    assert 'id="try-key"' not in again.text and 'id="try-result"' in again.text
    with db.session_scope() as session:
        assert session.scalars(select(AuditLog).where(AuditLog.action == "key.create",
                                                      AuditLog.actor == gateway.admin_email)).all()
    # without the CSRF token: refused
    assert s.post(gateway.url + "/admin/home/try", data={"model": "test/fake-gpt", "message": "x"}).status_code == 400


def test_try_a_request_shows_the_pipelines_error(gateway):
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    token = csrf_of(s.get(gateway.url + "/admin/").text)
    r = s.post(gateway.url + "/admin/home/try", headers={"HX-Request": "true"},
               data={"csrf_token": token, "model": "test/error-401", "message": "x"})
    assert r.status_code == 200 and 'role="alert"' in r.text


def test_org_admin_cannot_try_a_request_for_another_org(gateway):
    bravo = gateway.new_org("bravo")
    add_user(gateway, "default", "adm@default.example")
    s, _ = login(gateway, "adm@default.example", "password-123")
    token = csrf_of(s.get(gateway.url + "/admin/").text)
    r = s.post(gateway.url + "/admin/home/try", data={"csrf_token": token, "org": bravo.id, "model": "test/fake-gpt",
                                                       "message": "x"})
    assert r.status_code == 403
    with db.session_scope() as session:
        assert session.scalar(select(User).where(User.email == "adm@default.example")).org_id == gateway.org().id


def test_migration_0009_adds_the_days_so_far_to_the_daily_party_rollups(tmp_path):
    from datetime import datetime

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text

    from gateway.migrate import MIGRATIONS

    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    from alembic.script import ScriptDirectory

    before = ScriptDirectory.from_config(cfg).get_revision("0009").down_revision  # wherever 0009 is chained
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, before)
        conn.execute(text("INSERT INTO org (id, name, credits_micros, pricing, pricing_bps, request_fee_micros, "
                          "created_at) VALUES (1, 'o', 0, 'list', 0, 0, '2030-01-01 00:00:00.000000')"))
        for hour, charge in ((1, 10), (5, 20), (30, 40)):  # two hours of day 1, one of day 2
            at = datetime(2030, 1, 1 + hour // 24, hour % 24)
            conn.execute(text("INSERT INTO party_rollup (org_id, hour, party, party_id, requests, errors, input_tokens, "
                              "output_tokens, benchmark_micros, charge_micros, saved_micros) VALUES "
                              "(1, :at, 'user', 7, 1, 0, 2, 3, :c, :c, 0)"), {"at": at, "c": charge})
        command.upgrade(cfg, "0009")
        days = conn.execute(text("SELECT day, requests, charge_micros FROM party_day_rollup ORDER BY day")).all()
    assert [(str(d)[:10], r, c) for d, r, c in days] == [("2030-01-01", 2, 30), ("2030-01-02", 1, 40)]


def test_per_user_sums_read_whole_days_daily_and_the_ends_hourly(gateway):
    from datetime import datetime, timedelta

    from gateway.ledger.rollups import SUMS, upsert_party_rollups
    from gateway.ledger.trends import party_usage

    org = gateway.org().id
    base = datetime(2030, 3, 1)
    rows = [{"org_id": org, "hour": base + timedelta(hours=h), "party": "user", "party_id": 1 + h % 2,
             **dict.fromkeys(SUMS, 0), "requests": 1, "charge_micros": h} for h in range(0, 96, 1)]
    with db.write_lock, db.session_scope() as s:
        upsert_party_rollups(s, rows)
    for start, end in ((base + timedelta(hours=5, minutes=30), base + timedelta(days=3, hours=2)),
                       (base, base + timedelta(days=4)), (base + timedelta(hours=3), base + timedelta(hours=9))):
        with db.session_scope() as s:
            got = {line.party_id: (line.sums["requests"], line.sums["charge_micros"])
                   for line in party_usage(s, [org], "user", start, end)}
        lo = start.replace(minute=0)
        want: dict[int, tuple[int, int]] = {}
        for r in rows:
            if lo <= r["hour"] < end:
                n, c = want.get(r["party_id"], (0, 0))
                want[r["party_id"]] = (n + 1, c + r["charge_micros"])
        assert got == want, (start, end)


@pytest.mark.parametrize("path", ["/admin/home/try", "/admin/export/content-logging"])
def test_a_member_is_refused_the_forms(gateway, path):
    add_user(gateway, "default", "mem@example.com", role="member")
    s, _ = login(gateway, "mem@example.com", "password-123")
    token = csrf_of(s.get(gateway.url + "/admin/password").text)
    r = s.post(gateway.url + path, data={"csrf_token": token, "org": gateway.org().id, "days": "5",
                                         "model": "test/fake-gpt", "message": "x"}, allow_redirects=False)
    assert r.status_code == 403
    from gateway.models import ApiKey, ContentLogSetting

    with db.session_scope() as session:
        assert session.scalars(select(ContentLogSetting)).all() == []
        assert session.scalar(select(ApiKey).where(ApiKey.name == "console try")) is None
