"""Orgs and API Keys in the console over real HTTP (CSRF included): a key made there works on the next
API request and stops working once revoked, credits added there reach the gate, the secret is shown
once only, org admins stay inside their org, bad input writes nothing, and every change is audited."""

import html
import re
from datetime import timedelta

import openai
import pytest
from sqlalchemy import func, select

from gateway import crypto, db
from gateway.ledger.pricing import usd
from gateway.models import ApiKey, AuditLog, ChangeEvent, CreditGrant, Org, UsageRollup, utcnow
from tests.test_routing_console import admin, org_console

MSG = [{"role": "user", "content": "hi"}]
SECRET = re.compile(r'id="new-key-secret" readonly value="([^"]+)"')


def ask(gateway, key: str) -> str:
    # max_tokens bounds the hold each call places first (the test catalog's prices are high)
    return gateway.sdk(key).chat.completions.create(model="test/fake-gpt", messages=MSG,
                                                    max_tokens=5).choices[0].message.content


def status_of(gateway, key: str) -> int:
    try:
        ask(gateway, key)
    except openai.APIStatusError as e:
        return e.status_code
    return 200


def new_key(console, org_id: int, name: str = "", scope: str = "inference") -> tuple[str, int]:
    """Create a key in the console; (secret, key id) from the one response that shows the secret."""
    r = console.post("/admin/keys", {"org": org_id, "name": name, "scope": scope}, htmx=True)
    assert r.status_code == 200 and r.headers["HX-Trigger"] == "keys-changed", r.text
    secret = SECRET.search(r.text).group(1)
    with db.session_scope() as s:
        return secret, s.scalar(select(ApiKey.id).where(ApiKey.digest == crypto.digest(secret)))


def row_of(page: str, attr: str, value: str) -> str:
    """The <tr> of a table whose data-<attr> is `value`."""
    m = re.search(rf'<tr data-{attr}="{re.escape(value)}".*?</tr>', page, re.S)
    assert m, f"no row {attr}={value}"
    return m.group(0)


def counts() -> dict[str, int]:
    with db.session_scope() as s:
        return {m.__name__: s.scalar(select(func.count()).select_from(m))
                for m in (Org, ApiKey, CreditGrant, AuditLog, ChangeEvent)}


def org_id(gateway, name: str) -> int:
    return gateway.org(name).id


def test_both_pages_render_in_the_nav_and_answer_htmx_with_rows(gateway):
    console = admin(gateway)
    orgs = console.get("/admin/orgs")
    assert orgs.status_code == 200 and "<h1>Orgs</h1>" in orgs.text
    assert 'href="/admin/orgs"' in orgs.text and 'href="/admin/keys"' in orgs.text
    assert 'id="org-form"' in orgs.text and 'id="credits-form"' in console.get("/admin/credits").text
    default = row_of(orgs.text, "org", "default")
    assert f'data-credits="{usd(gateway.org().credits_micros)}"' in default and gateway.org().credits_micros > 0
    keys = console.get("/admin/keys")
    assert keys.status_code == 200 and "<h1>API Keys</h1>" in keys.text
    first = gateway.api_key[:10]  # the key made at first start, by its prefix only
    assert f'data-prefix="{first}"' in keys.text and gateway.api_key not in keys.text
    for path in ("/admin/orgs", "/admin/keys"):
        part = console.get(path, htmx=True)
        assert part.text.lstrip().startswith("<tr") and "HX-Request" in part.headers["Vary"], path


def test_a_console_key_works_at_once_stops_when_revoked_and_is_never_shown_again(gateway):
    console = admin(gateway)
    default_id = org_id(gateway, "default")
    secret, key_id = new_key(console, default_id, name="ci-bot")
    with db.session_scope() as s:
        key = s.get(ApiKey, key_id)
        assert (key.name, key.scope, key.org_id, key.prefix) == ("ci-bot", "inference", default_id, secret[:10])
        assert key.digest == crypto.digest(secret) and secret not in (key.digest, key.prefix)
    gateway.flush()  # what each server's sync loop does within a second
    assert ask(gateway, secret) == "Hello from fake fake-gpt."

    # a reload shows the key by its prefix only: never the secret, nor its digest
    gateway.flush()
    pages = {path: console.get(path).text for path in
             ("/admin/keys", f"/admin/keys?org={default_id}", "/admin/orgs", "/admin/audit", "/admin/logs")}
    pages["htmx rows"] = console.get("/admin/keys", htmx=True).text
    for name, page in pages.items():
        assert secret not in page and crypto.digest(secret) not in page, name
    row = row_of(pages["/admin/keys"], "key", str(key_id))
    assert f"<code>{secret[:10]}…</code>" in row and "ci-bot" in row and 'data-state="active"' in row

    r = console.post(f"/admin/keys/{key_id}/revoke", {}, htmx=True)
    assert r.status_code == 200 and r.headers["HX-Trigger"] == "keys-changed"
    assert 'data-state="revoked"' in r.text and "Revoke</button>" not in r.text and secret not in r.text
    gateway.flush()
    with pytest.raises(openai.AuthenticationError):
        ask(gateway, secret)
    assert ask(gateway, gateway.api_key) == "Hello from fake fake-gpt."  # the org's other key is untouched

    # a plain form post (no htmx) gets the whole page: the secret once, and the new row in the table
    page = console.post("/admin/keys", {"org": default_id, "name": "reader", "scope": "read"})
    assert page.status_code == 200
    second = SECRET.search(page.text).group(1)
    assert f'data-prefix="{second[:10]}"' in page.text
    gateway.flush()
    assert status_of(gateway, second) == 403  # a read key cannot make inference calls
    assert second not in console.get("/admin/keys").text
    assert console.status(f"/admin/keys/{key_id + 100}/revoke") == 404


def test_credits_added_in_the_console_reach_the_gate_on_the_next_request(gateway):
    console = admin(gateway)
    r = console.post("/admin/orgs", {"name": "acme", "credits": ""}, htmx=True)
    assert r.status_code == 200 and "orgs-changed" in r.headers["HX-Trigger"]
    assert "Created org acme with $0.000000 of credits." in r.text
    acme = org_id(gateway, "acme")
    secret, _ = new_key(console, acme)
    gateway.flush()
    assert status_of(gateway, secret) == 402  # no credits yet
    assert "out of credits" in row_of(console.get("/admin/orgs").text, "org", "acme")

    r = console.post("/admin/orgs/credits", {"org": acme, "amount": "5", "note": "invoice 17"}, htmx=True)
    assert r.status_code == 200 and r.headers["HX-Trigger"] == "credits-changed"
    assert "acme now has $5.000000" in r.text and r.text.lstrip().startswith('<form id="credits-form"')
    gateway.flush()
    assert ask(gateway, secret) == "Hello from fake fake-gpt."

    charged = sum(e.charge_micros for e in gateway.rows(org_id=acme))  # rows() flushes the ledger
    assert charged > 0
    row = row_of(console.get("/admin/orgs").text, "org", "acme")
    assert f'data-credits="{usd(5_000_000 - charged)}"' in row and "out of credits" not in row
    assert f'data-spend-day="{usd(charged)}"' in row and f'data-spend-week="{usd(charged)}"' in row
    assert re.search(r'<a href="/admin/keys\?org=\d+">1</a>', row)  # one active key

    # starting credits: an org created with $2.50 is served at once
    assert console.status("/admin/orgs", name="beta", credits="2.50") == 200
    beta = gateway.org("beta")
    assert beta.credits_micros == 2_500_000
    beta_key, _ = new_key(console, beta.id)
    gateway.flush()
    assert ask(gateway, beta_key) == "Hello from fake fake-gpt."
    with db.session_scope() as s:
        grants = {(g.org_id, g.amount_micros, g.note, g.created_by) for g in s.scalars(select(CreditGrant))
                  if g.org_id in (acme, beta.id)}
    assert grants == {(acme, 5_000_000, "invoice 17", gateway.admin_email),
                      (beta.id, 2_500_000, "initial credits", gateway.admin_email)}


def test_spend_comes_from_the_hourly_rollups_over_24_hours_and_7_days(gateway):
    gateway.new_org("alpha", usd=1)
    alpha = org_id(gateway, "alpha")
    now = utcnow().replace(minute=0, second=0, microsecond=0)
    with db.write_lock, db.session_scope() as s:
        for hours, mechanism, micros in ((2, "", 1_000_000), (72, "", 2_000_000), (8 * 24, "", 4_000_000),
                                         (2, "exact_cache", 500_000)):  # a saving, not a charge total
            s.add(UsageRollup(org_id=alpha, hour=now - timedelta(hours=hours), model="test/fake-gpt",
                              mechanism=mechanism, requests=1, charge_micros=micros))
    row = row_of(admin(gateway).get("/admin/orgs").text, "org", "alpha")
    assert 'data-spend-day="1.000000"' in row and 'data-spend-week="3.000000"' in row


def test_an_org_admin_sees_and_changes_only_their_own_org(gateway):
    gateway.new_org("alpha")
    gateway.new_org("bravo")
    bravo_secret = gateway.new_key("bravo", name="bravo-key")
    alpha_id, bravo_id = org_id(gateway, "alpha"), org_id(gateway, "bravo")
    with db.session_scope() as s:
        bravo_key_id = s.scalar(select(ApiKey.id).where(ApiKey.org_id == bravo_id))
    alpha = org_console(gateway, "alpha")
    before = gateway.org("alpha").credits_micros

    orgs = alpha.get("/admin/orgs").text
    assert 'data-org="alpha"' in orgs and 'data-org="default"' not in orgs and "bravo" not in orgs
    assert 'id="org-form"' not in orgs and 'id="credits-form"' not in orgs  # nothing to submit
    mine, mine_id = new_key(alpha, alpha_id, name="alpha-key")
    for path in ("/admin/keys", f"/admin/keys?org={bravo_id}", "/admin/audit"):
        page = alpha.get(path).text
        assert "bravo" not in page and bravo_secret[:10] not in page and gateway.api_key[:10] not in page, path
        assert mine[:10] in page, path
    select_html = re.search(r'<select name="org" required>(.*?)</select>', alpha.get("/admin/keys").text, re.S)
    assert re.findall(r'<option value="(\d+)"', select_html.group(1)) == [str(alpha_id)]

    # another org's keys, by id or by form, and any org or credit change: 403, nothing written
    state = counts()
    assert alpha.status("/admin/keys", org=bravo_id, name="sneaky", scope="inference") == 403
    assert alpha.status(f"/admin/keys/{bravo_key_id}/revoke") == 403
    assert alpha.status("/admin/orgs", name="gamma", credits="5") == 403
    assert alpha.status("/admin/orgs/credits", org=alpha_id, amount="5") == 403
    assert alpha.status("/admin/orgs/credits", org=bravo_id, amount="5") == 403
    assert alpha.get("/admin/orgs/credits").status_code == 403
    assert counts() == state and gateway.org("alpha").credits_micros == before
    gateway.flush()
    assert ask(gateway, bravo_secret) == "Hello from fake fake-gpt."  # still live

    # their own keys are theirs to create (done above) and revoke
    gateway.flush()
    assert ask(gateway, mine) == "Hello from fake fake-gpt."
    assert alpha.post(f"/admin/keys/{mine_id}/revoke", {}, htmx=True).status_code == 200
    gateway.flush()
    assert status_of(gateway, mine) == 401


def test_bad_input_is_explained_in_the_form_and_writes_nothing(gateway):
    console = admin(gateway)
    default_id = org_id(gateway, "default")
    state = counts()
    balance = gateway.org().credits_micros
    cases = [
        ("/admin/orgs", {"name": "default", "credits": "5"}, "An org named 'default' already exists."),
        ("/admin/orgs", {"name": "  ", "credits": "5"}, "Org name must not be empty."),
        ("/admin/orgs", {"name": "x" * 121}, "An org name has at most 120 characters."),
        ("/admin/orgs", {"name": "gamma", "credits": "ten"}, "'ten' is not an amount in USD"),
        ("/admin/orgs", {"name": "gamma", "credits": "-5"}, "The amount must not be negative."),
        ("/admin/orgs/credits", {"org": default_id, "amount": "abc"}, "'abc' is not an amount in USD"),
        ("/admin/orgs/credits", {"org": default_id, "amount": "NaN"}, "'NaN' is not an amount in USD"),
        ("/admin/orgs/credits", {"org": default_id, "amount": "0"}, "The amount must be positive."),
        ("/admin/orgs/credits", {"org": default_id, "amount": "-3"}, "The amount must be positive."),
        ("/admin/orgs/credits", {"org": default_id, "amount": ""}, "Enter an amount in USD"),
        ("/admin/orgs/credits", {"org": default_id, "amount": "1e12"}, "at most $1,000,000,000 at a time."),
        ("/admin/orgs/credits", {"org": "", "amount": "5"}, "Choose an org."),
        ("/admin/orgs/credits", {"org": "99999", "amount": "5"}, "That org does not exist."),
        ("/admin/keys", {"org": default_id, "scope": "superuser"}, "Scope must be one of inference, read, admin."),
        ("/admin/keys", {"org": "", "scope": "inference"}, "Choose an org."),
        ("/admin/keys", {"org": default_id, "scope": "read", "name": "k" * 121},
         "A key name has at most 120 characters."),
    ]
    for path, data, message in cases:
        r = console.post(path, data, htmx=True)
        assert r.status_code == 200 and "HX-Trigger" not in r.headers, (path, data)
        assert 'class="error" role="alert"' in r.text and message in html.unescape(r.text), (path, data, r.text)
        assert SECRET.search(r.text) is None
    # a plain form post: the whole page, 422, the message in the form that was sent, typed values kept
    r = console.post("/admin/orgs/credits", {"org": default_id, "amount": "abc"})
    assert r.status_code == 422 and r.text.count('class="error"') == 1
    assert 'name="amount" value="abc"' in r.text and "<h1>Credits</h1>" in r.text
    assert counts() == state and gateway.org().credits_micros == balance


def test_every_change_is_audited_with_who_and_what_and_no_secret(gateway):
    console = admin(gateway)
    assert console.status("/admin/orgs", name="acme", credits="1.5") == 200
    acme = org_id(gateway, "acme")
    assert console.status("/admin/orgs/credits", org=acme, amount="2") == 200
    secret, key_id = new_key(console, acme, name="etl", scope="read")
    for _ in range(2):  # revoking twice changes (and audits) once
        assert console.post(f"/admin/keys/{key_id}/revoke", {}, htmx=True).status_code == 200
    with db.session_scope() as s:
        rows = [(a.actor, a.action, a.target, a.detail, a.org_id) for a in
                s.scalars(select(AuditLog).where(AuditLog.org_id == acme).order_by(AuditLog.id))]
    who = gateway.admin_email
    assert rows == [
        (who, "credits.add", "acme", "1500000 micros", acme),
        (who, "org.create", "acme", "", acme),
        (who, "credits.add", "acme", "2000000 micros", acme),
        (who, "key.create", f"{secret[:10]}… (etl)", "scope=read", acme),
        (who, "key.revoke", f"{secret[:10]}…", "", acme),
    ]
    assert not any(secret in "".join(map(str, r)) or crypto.digest(secret) in "".join(map(str, r)) for r in rows)
    audit = console.get("/admin/audit").text
    assert "key.revoke" in audit and "org.create" in audit and secret not in audit


def test_a_name_taken_at_the_same_moment_elsewhere_is_a_message_not_a_500(gateway, monkeypatch):
    """Two processes may both pass the name check; the loser's commit hits the unique index."""
    from sqlalchemy.exc import IntegrityError

    from gateway.services import tenancy

    def collide(*args, **kwargs):
        raise IntegrityError("INSERT INTO org ...", {}, Exception("UNIQUE constraint failed: org.name"))

    monkeypatch.setattr(tenancy, "create_org", collide)
    before = counts()
    r = admin(gateway).post("/admin/orgs", {"name": "twin", "credits": "1"}, htmx=True)
    assert r.status_code == 200 and "made at the same moment elsewhere" in r.text
    assert counts() == before
