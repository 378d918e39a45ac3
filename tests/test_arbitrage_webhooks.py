"""Apps' delivery settings for deferred requests: a default deferral (requests without the header are
deferred as if they sent it; the header wins; apps without it are never delayed), and a webhook that
receives each deferred result once, signed (X-Gateway-Signature: sha256=HMAC of the body under the
app's secret, shown once, stored encrypted), retried with backoff by the scheduler's job, durable in
the database. Hostile URLs and policy values are refused with a message, never a 500.

Real parts: the gateway on loopback, the fake OpenAI Batches upstream, a loopback webhook receiver
(gevent WSGI server), the console over HTTP with CSRF, the `gateway` CLI in a child process."""

from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest
import requests
import standardwebhooks
from gevent.pywsgi import WSGIServer
from sqlalchemy import select

from gateway import db, jobs
from gateway.models import App, AuditLog, DeferredRequest
from gateway.services import arbitrage, tenancy, webhooks
from tests.conftest import wait_for
from tests.test_console_roles import person
from tests.test_console_tenancy import row_of
from tests.test_routing_console import admin

SECRET_SHOWN = r'<code class="secret"[^>]*>([^<]+)</code>'


class Receiver:
    """A webhook endpoint on loopback: answers each POST with the next status of `statuses` (then 200)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[tuple[dict, bytes, int]] = []  # (headers, body, status answered)
        self.server = WSGIServer(("127.0.0.1", 0), self.wsgi, log=None)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/deferred?src=gw"

    def wsgi(self, environ, start_response):
        body = environ["wsgi.input"].read()
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        status = self.statuses.pop(0) if self.statuses else 200
        self.received.append((headers, body, status))
        start_response(f"{status} X", [("Content-Type", "text/plain")])
        return [b"ok"]

    def accepted(self) -> list[tuple[dict, bytes, int]]:
        return [r for r in self.received if 200 <= r[2] < 300]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.stop()


@pytest.fixture
def wgw(gateway_factory, fake_openai_batches):
    return gateway_factory(batch_poll_min_seconds=0, batch_poll_max_seconds=0, batch_arbitrage_min_seconds=3600,
                           batch_arbitrage_max_requests=100, batch_arbitrage_max_age_seconds=3600,
                           webhook_allow_private=True, webhook_retry_seconds=0, webhook_max_attempts=3)


def new_app(gw, org: str = "default", slug: str = "reports") -> tuple[int, str]:
    """An app of `org` and a key of it."""
    with db.write_lock, db.session_scope() as s:
        o = tenancy.org_by_name(s, org)
        app = tenancy.create_app(s, o, slug, actor="test")
        key = tenancy.create_key(s, o, name=slug, app_id=app.id, actor="test").secret
        app_id = app.id
    gw.flush()
    return app_id, key


def configure(gw, app_id: int, deferral=None, url=None) -> str | None:
    with db.write_lock, db.session_scope() as s:
        app = s.get(App, app_id)
        webhooks.set_deferral(s, app, deferral, actor="test")
        secret = webhooks.set_webhook(s, app, url, "test-secret", True, actor="test")
    gw.flush()
    return secret


def chat(gw, key: str, headers=None, model: str = "batchy") -> requests.Response:
    return gw.post("/v1/chat/completions", {"model": model, "max_tokens": 20,
                                            "messages": [{"role": "user", "content": "later"}]},
                   key=key, headers=dict(headers or {}))


def result(gw, rid: str, key: str) -> requests.Response:
    return requests.get(f"{gw.v1}/requests/{rid}/result", headers={"Authorization": f"Bearer {key}"})


def settle(gw, rid: str, key: str) -> None:
    arbitrage.flush_due(force=True)

    def done() -> bool:
        jobs.poll_batches()
        gw.flush()
        return result(gw, rid, key).status_code == 200

    wait_for(done, timeout=60)


def row(rid: str) -> DeferredRequest:
    with db.session_scope() as s:
        return s.scalar(select(DeferredRequest).where(DeferredRequest.request_id == rid))


# ---- the app's default deferral ---------------------------------------------------------------------

def test_app_policy_defers_requests_without_the_header_and_the_header_wins(wgw, fake_openai_batches):
    app_id, key = new_app(wgw)
    _, plain_app_key = new_app(wgw, slug="interactive")
    configure(wgw, app_id, deferral=7200)
    deferred = chat(wgw, key)  # no header: deferred by the app's policy
    assert deferred.status_code == 202 and deferred.json()["status"] == "queued"
    assert row(deferred.json()["id"]).app_id == app_id
    short = chat(wgw, key, {"x-gateway-deadline": "30"}, "test/fake-gpt")  # the request's own header wins
    assert short.status_code == 200 and short.json()["object"] == "chat.completion"
    bad = chat(wgw, key, {"x-gateway-deadline": "nan"})  # and is still checked
    assert bad.status_code == 400
    for other in (plain_app_key, wgw.api_key):  # an app without the policy, a key without an app: never delayed
        now = chat(wgw, other, model="test/fake-gpt")
        assert now.status_code == 200 and now.json()["object"] == "chat.completion"
    configure(wgw, app_id, deferral=None)  # turned off: the app's requests are served at once again
    assert chat(wgw, key, model="test/fake-gpt").status_code == 200
    assert fake_openai_batches.batches == {}


def test_a_policy_shorter_than_a_batch_window_delays_nothing(wgw):
    app_id, key = new_app(wgw)
    configure(wgw, app_id, deferral=60)  # below batch_arbitrage_min_seconds
    assert chat(wgw, key, model="test/fake-gpt").status_code == 200


# ---- the webhook --------------------------------------------------------------------------------------

def test_webhook_gets_the_signed_result_once_after_a_failure(wgw, fake_openai_batches):
    receiver = Receiver([500])
    try:
        app_id, key = new_app(wgw)
        secret = configure(wgw, app_id, url=receiver.url)
        assert secret and secret.startswith("whsec_")
        with db.session_scope() as s:  # stored encrypted, never the secret itself
            enc = s.get(App, app_id).webhook_secret_enc
        assert enc and secret.encode() not in enc
        rid = chat(wgw, key, {"x-gateway-deadline": "86400"}).json()["id"]
        jobs.deliver_webhooks()
        assert receiver.received == []  # not before the result is in
        settle(wgw, rid, key)
        assert jobs.deliver_webhooks() is None and len(receiver.received) == 1  # the 500
        assert row(rid).webhook_state == "pending" and row(rid).webhook_attempts == 1
        jobs.deliver_webhooks()  # retried (backoff 0 here)
        jobs.deliver_webhooks()  # and never again once delivered
        assert [r[2] for r in receiver.received] == [500, 200]
        (headers, body, _), = receiver.accepted()
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-gateway-signature"] == f"sha256={expected}"
        assert headers["x-gateway-webhook-id"] == rid
        # the same delivery verifies with the Standard Webhooks reference library
        assert standardwebhooks.Webhook(secret).verify(body, headers) == orjson.loads(body)
        forged = {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)}
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook(secret).verify(body, forged)
        got = orjson.loads(body)
        fetched = result(wgw, rid, key)
        assert got["id"] == rid and got["status"] == "succeeded" and got["status_code"] == 200
        assert got["result"] == fetched.json()  # the same result as GET
        assert got["cost"]["saved"] == fetched.headers["x-gateway-saved"] and float(got["cost"]["saved"]) > 0
        assert got["cost"]["charge"] == fetched.headers["x-gateway-charge"]
        assert row(rid).webhook_state == "delivered" and row(rid).webhook_attempts == 2
        wgw.new_org("other")
        assert result(wgw, rid, wgw.new_key("other")).status_code == 404  # another org's id
    finally:
        receiver.server.stop()


def test_a_webhook_that_never_answers_gives_up_and_the_result_stays(wgw, fake_openai_batches):
    receiver = Receiver([503, 503, 503, 503])
    try:
        app_id, key = new_app(wgw)
        configure(wgw, app_id, url=receiver.url)
        rid = chat(wgw, key, {"x-gateway-deadline": "86400"}).json()["id"]
        settle(wgw, rid, key)
        for _ in range(5):
            jobs.deliver_webhooks()
        assert len(receiver.received) == 3 and row(rid).webhook_state == "failed"  # webhook_max_attempts
        assert "503" in row(rid).webhook_error
        assert result(wgw, rid, key).status_code == 200
    finally:
        receiver.server.stop()


def test_requests_of_an_app_without_webhook_are_not_posted(wgw, fake_openai_batches, receiver):
    app_id, key = new_app(wgw)
    rid = chat(wgw, key, {"x-gateway-deadline": "86400"}).json()["id"]
    settle(wgw, rid, key)
    jobs.deliver_webhooks()
    assert receiver.received == [] and row(rid).webhook_state == "none"


def test_a_loopback_webhook_is_refused_without_the_setting(gateway):
    app_id, _ = new_app(gateway)
    with db.write_lock, db.session_scope() as s:
        app = s.get(App, app_id)
        for url in ("http://127.0.0.1:9/x", "http://localhost/x", "http://[::1]/", "http://10.0.0.8/",
                    "http://0x7f000001/"):
            with pytest.raises(webhooks.AdminError, match="GATEWAY_WEBHOOK_ALLOW_PRIVATE"):
                webhooks.set_webhook(s, app, url, "k", False, actor="t")
        with pytest.raises(webhooks.AdminError, match="metadata"):  # never, even when private is allowed
            webhooks.set_webhook(s, app, "http://169.254.169.254/latest", "k", True, actor="t")
        assert webhooks.set_webhook(s, app, "https://hooks.example.com/x", "k", False, actor="t")


def test_delivery_checks_the_address_again_at_connect(wgw, fake_openai_batches, receiver):
    """A URL saved while private addresses were allowed is refused at connect once they are not."""
    app_id, key = new_app(wgw)
    configure(wgw, app_id, url=receiver.url)
    rid = chat(wgw, key, {"x-gateway-deadline": "86400"}).json()["id"]
    settle(wgw, rid, key)
    webhooks.CONFIG.allow_private = False
    try:
        jobs.deliver_webhooks()
    finally:
        webhooks.CONFIG.allow_private = True
    assert receiver.received == [] and "egress refused" in row(rid).webhook_error


# ---- console and CLI -----------------------------------------------------------------------------------

HOSTILE_DEFERRALS = ["abc", "-5", "1e3", "0", "99999999999", "nan", "inf", "3.5", "١٠٠", "x" * 40, "2592001"]
HOSTILE_URLS = ["ftp://example.com/x", "javascript:alert(1)", "file:///etc/passwd", "http://", "example.com/x",
                "http://169.254.169.254/", "http://user:pw@example.com/", "http://exa mple.com/",
                "http://example.com:99999/", "https://" + "a" * 600 + ".com/"]


def test_console_sets_the_policy_and_webhook_and_shows_the_secret_once(gateway):
    alpha = gateway.new_org("alpha")
    boss = person(gateway, "alpha", "boss@alpha.example", "org-admin")
    with db.write_lock, db.session_scope() as s:
        app_id = tenancy.create_app(s, s.get(tenancy.Org, alpha.id), "jobs", actor="t").id
    r = boss.post(f"/admin/apps/{app_id}/delivery", {"deferral": "7200", "webhook_url": "https://hooks.example.com/d"},
                  htmx=True)
    assert r.status_code == 200 and 'data-deferral="7200"' in r.text and "https://hooks.example.com/d" in r.text
    import re
    shown = re.findall(SECRET_SHOWN, r.text)
    assert len(shown) == 1 and shown[0].startswith("whsec_")
    page = boss.get("/admin/apps").text
    assert shown[0] not in page and 'data-deferral="7200"' in row_of(page, "app", "jobs")  # never shown again
    again = boss.post(f"/admin/apps/{app_id}/delivery", {"deferral": "", "webhook_url": "https://hooks.example.com/d"},
                      htmx=True)
    assert not re.findall(SECRET_SHOWN, again.text) and 'data-deferral="never"' in again.text
    rotated = boss.post(f"/admin/apps/{app_id}/webhook-secret", {}, htmx=True)
    new = re.findall(SECRET_SHOWN, rotated.text)
    assert len(new) == 1 and new[0] != shown[0]
    with db.session_scope() as s:
        app = s.get(App, app_id)
        assert webhooks.secret_of(app, "test-secret") == new[0]
        assert {a.action for a in s.scalars(select(AuditLog).where(AuditLog.target == "jobs"))} >= {
            "app.deferral", "app.webhook", "app.webhook_secret"}


@pytest.mark.parametrize("field,values", [("deferral", HOSTILE_DEFERRALS), ("webhook_url", HOSTILE_URLS)])
def test_console_refuses_hostile_policy_forms(gateway, field, values):
    console = admin(gateway)
    app_id, _ = new_app(gateway)
    for value in values:
        r = console.post(f"/admin/apps/{app_id}/delivery", {"deferral": "", "webhook_url": "", field: value},
                         htmx=True)
        assert r.status_code == 200 and 'class="error"' in r.text, (value, r.status_code)
        plain = console.post(f"/admin/apps/{app_id}/delivery", {field: value})  # a browser without htmx
        assert plain.status_code == 200 and 'class="error"' in plain.text
    missing = console.post(f"/admin/apps/{app_id}/delivery", {}, htmx=True)  # no fields at all: both cleared
    assert missing.status_code == 200
    assert console.post("/admin/apps/999999/delivery", {"deferral": "60"}, htmx=True).status_code == 404
    with db.session_scope() as s:
        app = s.get(App, app_id)
        assert app.webhook_url is None and app.arbitrage_deadline_seconds is None


def test_another_orgs_admin_and_members_cannot_change_an_app(gateway):
    gateway.new_org("alpha")
    gateway.new_org("bravo")
    app_id, _ = new_app(gateway, org="alpha")
    outsider = person(gateway, "bravo", "boss@bravo.example", "org-admin")
    member = person(gateway, "alpha", "dev@alpha.example", "member")
    for who in (outsider, member):
        r = who.post(f"/admin/apps/{app_id}/delivery", {"deferral": "60", "webhook_url": "https://e.example.com/"},
                     htmx=True)
        assert r.status_code in (403, 404)
    with db.session_scope() as s:
        assert s.get(App, app_id).webhook_url is None


def test_cli_sets_the_webhook_and_prints_the_secret_once(gateway):
    new_app(gateway)
    out = gateway.cli("app", "deferral", "--org", "default", "--slug", "reports", "--seconds", "7200").stdout
    assert "7200 s" in out
    refused = gateway.cli("app", "webhook", "--org", "default", "--slug", "reports", "--url", "http://127.0.0.1/x",
                          check=False)
    assert refused.returncode == 1 and "GATEWAY_WEBHOOK_ALLOW_PRIVATE" in refused.stderr
    out = gateway.cli("app", "webhook", "--org", "default", "--slug", "reports", "--url",
                      "https://hooks.example.com/x").stdout
    secret = out.split("signing secret:")[1].split()[0]
    with db.session_scope() as s:
        app = s.scalar(select(App).where(App.slug == "reports"))
        assert webhooks.secret_of(app, "test-secret") == secret and app.arbitrage_deadline_seconds == 7200
    bad = gateway.cli("app", "deferral", "--org", "default", "--slug", "reports", "--seconds", "-1", check=False)
    assert bad.returncode == 1 and "whole number" in bad.stderr
    rotated = gateway.cli("app", "webhook-secret", "--org", "default", "--slug", "reports").stdout
    assert "signing secret:" in rotated and secret not in rotated


def test_a_failing_receiver_holds_up_only_its_own_app_for_a_tick(wgw, fake_openai_batches):
    down, up = Receiver([500] * 10), Receiver()
    try:
        slow_app, slow_key = new_app(wgw, slug="slow")
        fine_app, fine_key = new_app(wgw, slug="fine")
        configure(wgw, slow_app, url=down.url)
        configure(wgw, fine_app, url=up.url)
        slow = [chat(wgw, slow_key, {"x-gateway-deadline": "86400"}).json()["id"] for _ in range(3)]
        fine = chat(wgw, fine_key, {"x-gateway-deadline": "86400"}).json()["id"]
        settle(wgw, fine, fine_key)
        jobs.deliver_webhooks()
        assert len(down.received) == 1  # its first failure: the app's other results wait for a later tick
        assert [row(rid).webhook_attempts for rid in slow] == [1, 0, 0]
        assert [orjson.loads(b)["id"] for _, b, _ in up.accepted()] == [fine]
    finally:
        down.server.stop()
        up.server.stop()


@pytest.mark.parametrize("value,allowed", [("1", True), ("true", True), ("yes", True), ("0", False), ("off", False)])
def test_the_private_webhook_switch_is_read_from_the_environment(monkeypatch, tmp_path, value, allowed):
    from gateway.settings import Settings

    monkeypatch.setenv("GATEWAY_WEBHOOK_ALLOW_PRIVATE", value)
    monkeypatch.setenv("GATEWAY_WEBHOOK_RETRY_SECONDS", "2.5")
    monkeypatch.setenv("GATEWAY_WEBHOOK_MAX_ATTEMPTS", "4")
    s = Settings.load({"instance": tmp_path, "secret_key": "x"})
    assert (s.webhook_allow_private, s.webhook_retry_seconds, s.webhook_max_attempts) == (allowed, 2.5, 4)
    monkeypatch.delenv("GATEWAY_WEBHOOK_ALLOW_PRIVATE")
    assert Settings.load({"instance": tmp_path, "secret_key": "x"}).webhook_allow_private is False  # off by default
