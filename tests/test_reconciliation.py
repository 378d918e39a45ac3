"""Reconciliation: a day's ledger against OpenAI's usage and costs APIs, Anthropic's usage and cost
reports and OpenRouter's generation stats (fakes in tests/fakes/ that follow the published shapes):
drift per provider, model and day, flagged over the threshold, stored, shown in the console, run by
`gateway reconcile --day`. Hostile reports (errors, endless pages) give a note, never a crash."""

import re
import uuid
from datetime import date, datetime

import pytest
from sqlalchemy import select

from gateway import crypto, db
from gateway.models import LedgerEntry, Provider, ReconciliationLine, utcnow
from gateway.services import reconciliation as reconcile
from tests.fakes.usage_reports_upstream import FakeUsageReports, serve_reports
from tests.test_console import login, org_admin

MSG = [{"role": "user", "content": "count these few words"}]
ADMIN_KEY = "sk-admin-test"


@pytest.fixture(scope="module")
def reports():
    fake = FakeUsageReports(ADMIN_KEY)
    server, fake.url = serve_reports(fake)
    yield fake
    server.stop()


@pytest.fixture(autouse=True)
def _clean(reports):
    reports.reset()


def point(gw, provider: str, base_url: str | None, key: str | None = ADMIN_KEY) -> None:
    """The operator configures the provider's admin key (and where its admin API answers)."""
    with db.write_lock, db.session_scope() as s:
        p = s.scalar(select(Provider).where(Provider.name == provider))
        if base_url:
            p.base_url = base_url
        p.admin_api_key_enc = crypto.encrypt(crypto.derive_key("test-secret"), key,
                                             aad=b"admin:" + p.name.encode()) if key else None


def ledger_row(gw, provider: str, model: str, n_in: int, n_out: int, **kw) -> None:
    with db.write_lock, db.session_scope() as s:
        s.add(LedgerEntry(request_id="req_" + uuid.uuid4().hex, org_id=gw.org().id, endpoint="chat.completions",
                          requested_model="test/x", model="test/x", provider=provider, upstream_model=model,
                          input_tokens=n_in, output_tokens=n_out, status=200, **kw))


def run(day=None) -> list[ReconciliationLine]:
    with db.write_lock, db.session_scope() as s:
        return reconcile.reconcile(s, day or utcnow().date(), "test-secret")


def by_model(lines, provider):
    return {line.model: line for line in lines if line.provider == provider}


def test_openai_matching_usage_is_not_flagged_and_a_gap_is(gateway, reports):
    for _ in range(3):
        gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=MSG)
    rows = gateway.rows()
    tokens = sum(r.input_tokens + r.output_tokens for r in rows)
    today = utcnow().date()
    # their snapshot name maps onto our upstream model; a model we never sent is theirs alone
    reports.openai[today] = {
        "fake-gpt-2024-07-18": {"requests": 3, "input": sum(r.input_tokens for r in rows),
                                "output": sum(r.output_tokens for r in rows),
                                "cost_usd": sum(r.charge_micros for r in rows) / 1e6},
        "gpt-4o": {"requests": 5, "input": 100, "output": 50, "cost_usd": 0.25},
    }
    reports.page_size = 1  # results spread over pages: has_more / next_page are followed
    point(gateway, "fake", reports.url + "/openai/v1")
    lines = by_model(run(), "fake")
    mine = lines["fake-gpt"]
    assert (mine.our_requests, mine.their_requests, mine.our_tokens, mine.their_tokens) == (3, 3, tokens, tokens)
    assert mine.our_cost_micros == sum(r.charge_micros for r in rows) > 0
    assert abs(mine.their_cost_micros - mine.our_cost_micros) <= 1
    assert mine.drift < 0.001 and not mine.flagged
    other = lines["gpt-4o"]
    assert other.our_requests == 0 and other.their_requests == 5 and other.their_cost_micros == 250_000
    assert other.flagged
    assert any(r["query"].get("page") for r in reports.requests)  # a second page was asked for


def test_cost_drift_over_the_threshold_is_flagged(gateway, reports):
    ledger_row(gateway, "fake", "fake-gpt", 1000, 500)  # $1 + $1 at the route's prices ($1000, $2000 / Mtok)
    today = utcnow().date()
    reports.openai[today] = {"fake-gpt": {"requests": 1, "input": 1000, "output": 500, "cost_usd": 2.01}}
    point(gateway, "fake", reports.url + "/openai/v1")
    line = by_model(run(), "fake")["fake-gpt"]
    assert line.our_cost_micros == 2_000_000 and line.their_cost_micros == 2_010_000
    assert not line.flagged  # 0.5% is within 2%
    reports.openai[today]["fake-gpt"]["cost_usd"] = 2.10
    line = by_model(run(), "fake")["fake-gpt"]
    assert line.flagged and round(line.drift, 3) == round(0.1 / 2.1, 3)
    with db.session_scope() as s:  # a run replaces the day's lines
        assert len(s.scalars(select(ReconciliationLine).where(ReconciliationLine.provider == "fake")).all()) == 1


def test_byok_cache_hits_and_other_days_are_not_ours(gateway, reports):
    ledger_row(gateway, "fake", "fake-gpt", 1000, 10)
    ledger_row(gateway, "fake", "fake-gpt", 1000, 10, byok=True)  # billed to the org's own account
    ledger_row(gateway, "fake", "fake-gpt", 1000, 10, cache="hit")  # never reached the provider
    ledger_row(gateway, "fake", "fake-gpt", 1000, 10, created_at=datetime(2020, 1, 1, 12))
    point(gateway, "fake", reports.url + "/openai/v1")
    line = by_model(run(), "fake")["fake-gpt"]
    assert (line.our_requests, line.our_tokens) == (1, 1010)


def test_anthropic_usage_and_cost_report(gateway, fake_anthropic, reports):
    ledger_row(gateway, "fakeanthropic", "claude-test", 2_000_000, 100_000)
    today = utcnow().date()
    reports.anthropic[today] = {"claude-test-20250101": {"input": 2_000_000, "output": 100_000, "cost_usd": 9.5}}
    point(gateway, "fakeanthropic", reports.url + "/anthropic")
    line = by_model(run(), "fakeanthropic")["claude-test"]
    assert line.their_requests is None  # the usage report has no request counts
    assert line.their_tokens == line.our_tokens == 2_100_000
    assert line.their_cost_micros == 9_500_000


def test_openrouter_generation_stats_by_id(gateway, fake_openrouter, reports):
    client = gateway.sdk()
    for n in range(2):  # two bodies: the fake's generation ids are a hash of the request
        client.chat.completions.create(model="openrouter-test/fake-gpt",
                                       messages=[{"role": "user", "content": f"request number {n}"}])
    rows = [r for r in gateway.rows() if r.provider == "fakeopenrouter"]
    assert all(r.upstream_id and r.upstream_id.startswith("gen-") for r in rows)
    lines = by_model(run(), "fakeopenrouter")
    (line,) = lines.values()
    assert line.our_requests == line.their_requests == 2
    assert line.their_cost_micros == sum(round(g["total_cost"] * 1e6) for g in fake_openrouter.generations.values())


def test_no_admin_key_or_a_failing_report_is_a_note_not_a_crash(gateway, reports):
    ledger_row(gateway, "fake", "fake-gpt", 10, 10)
    line = by_model(run(), "fake")["fake-gpt"]
    assert "no admin key" in line.note and line.their_tokens is None and not line.flagged
    point(gateway, "fake", reports.url + "/openai/v1")
    reports.fail_with = 500
    assert "HTTP 500" in by_model(run(), "fake")["fake-gpt"].note
    reports.fail_with, reports.endless = None, True
    assert "pages" in by_model(run(), "fake")["fake-gpt"].note
    reports.endless = False
    point(gateway, "fake", None, key="sk-wrong")
    assert "HTTP 401" in by_model(run(), "fake")["fake-gpt"].note


def test_cli_reconcile_and_the_console_page(gateway, reports):
    ledger_row(gateway, "fake", "fake-gpt", 1000, 0)
    today = utcnow().date()
    reports.openai[today] = {"fake-gpt": {"requests": 1, "input": 1000, "output": 0, "cost_usd": 5}}
    point(gateway, "fake", reports.url + "/openai/v1")
    out = gateway.cli("reconcile", "--day", today.isoformat()).stdout
    assert re.search(r"fake fake-gpt: requests 1/1 tokens 1000/1000 usd 1\.000000/5\.000000 .*FLAGGED", out)
    assert gateway.cli("reconcile", "--day", "yesterday", check=False).returncode != 0
    session, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    page = session.get(gateway.url + "/admin/reconciliation")
    assert page.status_code == 200
    assert "fake-gpt" in page.text and "flagged" in page.text
    day_page = session.get(gateway.url + f"/admin/reconciliation?day={today.isoformat()}")
    assert "5.000000" in day_page.text
    assert session.get(gateway.url + "/admin/reconciliation?day=nope").status_code == 200  # ignored, not a 500


def test_an_org_admin_may_not_see_reconciliation(gateway):
    org_admin(gateway, "default", "orgadmin@example.com")
    session, _ = login(gateway, "orgadmin@example.com", "password-123")
    assert session.get(gateway.url + "/admin/reconciliation").status_code == 403


def test_the_threshold_comes_from_the_config(gateway, reports):
    from gateway import seed

    with db.write_lock, db.session_scope() as s:
        seed.put_setting(s, "reconciliation", {"drift_threshold_percent": 10}, actor="test")
    ledger_row(gateway, "fake", "fake-gpt", 1000, 500)
    reports.openai[utcnow().date()] = {"fake-gpt": {"requests": 1, "input": 1000, "output": 500,
                                                    "cost_usd": 2.1}}
    point(gateway, "fake", reports.url + "/openai/v1")
    assert not by_model(run(), "fake")["fake-gpt"].flagged  # 4.8% is within 10%


def test_an_empty_day_has_no_lines(gateway, reports):
    point(gateway, "fake", reports.url + "/openai/v1")
    assert run(date(2020, 1, 2)) == []


def test_admin_keys_come_from_the_config(gateway, tmp_path, monkeypatch):
    from gateway import seed

    path = tmp_path / "extra.yaml"
    path.write_text("providers:\n"
                    "  - {name: oa, kind: openai, base_url: 'http://127.0.0.1:9/v1', allow_private: true,\n"
                    "     admin_api_key_env: OPENAI_ADMIN_KEY}\n"
                    "  - {name: an, kind: anthropic, base_url: 'http://127.0.0.1:9', allow_private: true,\n"
                    "     admin_api_key: sk-ant-admin-x}\n")
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "sk-admin-from-env")
    with db.write_lock, db.session_scope() as s:
        seed.apply(s, seed.load_file(path), "test-secret")
        keys = {p.name: reconcile.admin_key(p, "test-secret") for p in s.scalars(select(Provider))}
        stored = s.scalar(select(Provider).where(Provider.name == "an")).admin_api_key_enc
    assert keys["oa"] == "sk-admin-from-env" and keys["an"] == "sk-ant-admin-x"
    assert b"sk-ant-admin-x" not in stored
    both = tmp_path / "both.yaml"
    both.write_text("providers:\n  - {name: x, kind: openai, base_url: 'http://h/v1', admin_api_key: a, "
                    "admin_api_key_env: B}\n")
    with pytest.raises(seed.ConfigError):
        seed.load_file(both)


def test_the_daily_job_reconciles_yesterday(gateway, reports, monkeypatch):
    from datetime import timedelta

    from gateway import jobs

    yesterday = utcnow() - timedelta(days=1)
    ledger_row(gateway, "fake", "fake-gpt", 1000, 0, created_at=yesterday)
    reports.openai[yesterday.date()] = {"fake-gpt": {"requests": 1, "input": 1000, "output": 0, "cost_usd": 1}}
    point(gateway, "fake", reports.url + "/openai/v1")
    assert jobs.reconcile_yesterday in gateway.app.extensions["jobs"]
    with gateway.app.app_context():
        jobs.reconcile_yesterday()
    with db.session_scope() as s:
        line = s.scalar(select(ReconciliationLine).where(ReconciliationLine.day == yesterday.date()))
    assert (line.provider, line.model, line.their_requests, line.flagged) == ("fake", "fake-gpt", 1, False)
