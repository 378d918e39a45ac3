"""Data protection console: scope toggles reach the API, custom rules and the test box, tenancy."""

from __future__ import annotations

import orjson

from gateway import db
from gateway.models import AuditLog, DlpCustomRule
from tests.test_console import csrf_of, login, org_admin

EMAIL = "alice.smith@example.com"


def _page(session, gateway, path="/admin/dlp"):
    r = session.get(gateway.url + path)
    assert r.status_code == 200, r.text
    return r.text


def test_scope_form_turns_protection_on_for_the_api(gateway, fake_openai):
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    html = _page(s, gateway)
    assert "Data protection" in html and "default" in html and 'name="rule:email"' not in html
    org_id = gateway.org("default").id
    form = _page(s, gateway, f"/admin/dlp/scope?org={org_id}")
    assert 'name="rule:email"' in form and "not installed" in form
    bad = s.post(gateway.url + "/admin/dlp/scope", data={"csrf_token": csrf_of(form), "org": org_id, "app": "",
                                                         "enabled": "on", "rule:email": "redact", "regions": "QQ"})
    assert bad.status_code == 422 and "Unknown phone region QQ" in bad.text
    r = s.post(gateway.url + "/admin/dlp/scope", data={"csrf_token": csrf_of(form), "org": org_id, "app": "",
                                                       "enabled": "on", "rule:email": "redact", "rule:phone": "",
                                                       "regions": "gb, fr"})
    assert r.status_code == 200 and "Saved" in r.text and 'value="GB FR"' in r.text
    gateway.flush()
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=[{"role": "user", "content": f"hi {EMAIL}"}])
    assert fake_openai.requests[-1]["body"]["messages"][0]["content"] == "hi [EMAIL_1]"
    gateway.flush()
    html = _page(s, gateway)
    assert "email:redact" in html and "/admin/logs/req_" in html  # the activity row links to the request
    assert EMAIL not in html
    with db.session_scope() as session:
        assert session.query(AuditLog).filter_by(action="dlp.enable").count() == 1


def test_custom_rules_and_the_test_box(gateway):
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    token = csrf_of(_page(s, gateway))
    r = s.post(gateway.url + "/admin/dlp/test", data={"csrf_token": token, "pattern": r"\bREF-\d{6}\b",
                                                      "sample": "see REF-123456 and REF-1"})
    assert "4–14" in r.text and "REF-123456" in r.text
    r = s.post(gateway.url + "/admin/dlp/test", data={"csrf_token": token, "pattern": r"(a+)+$", "sample": "aaa"})
    assert r.status_code == 422 and "Nested quantifiers" in r.text
    org_id = gateway.org("default").id
    r = s.post(gateway.url + "/admin/dlp/custom", data={"csrf_token": token, "org": org_id, "name": "order-ref",
                                                        "kind": "ORDER_REF", "pattern": r"\bREF-\d{6}\b"})
    assert r.status_code == 200 and "custom:order-ref" in r.text
    bad = s.post(gateway.url + "/admin/dlp/custom", data={"csrf_token": token, "org": org_id, "name": "x",
                                                          "kind": "X", "pattern": "("})
    assert bad.status_code == 422 and "does not compile" in bad.text
    with db.session_scope() as session:
        assert [c.name for c in session.query(DlpCustomRule).all()] == ["order-ref"]


def test_custom_rule_redacts_through_the_api(gateway, fake_openai):
    from gateway.services import dlp as dlp_service

    org_id = gateway.org("default").id
    with db.write_lock, db.session_scope() as s:
        dlp_service.add_custom_rule(s, dlp_service.CLI, org_id, "order-ref", "ORDER_REF", r"\bREF-\d{6}\b")
        dlp_service.enable(s, dlp_service.CLI, org_id, None, {"custom:order-ref": "redact"})
    gateway.flush()
    resp = gateway.sdk().chat.completions.create(model="test/echo",
                                                 messages=[{"role": "user", "content": "status of REF-123456?"}])
    assert b"REF-123456" not in orjson.dumps(fake_openai.requests[-1]["body"])
    assert "[ORDER_REF_1]" in orjson.dumps(fake_openai.requests[-1]["body"]).decode()
    assert "REF-123456" in resp.choices[0].message.content


def test_an_org_admin_sees_and_edits_only_their_own_org(gateway, fake_openai):
    from gateway.services import dlp as dlp_service

    gateway.new_org("beta")
    org_admin(gateway, "beta", "admin@beta.example")
    default_id = gateway.org("default").id
    with db.write_lock, db.session_scope() as s:
        dlp_service.enable(s, dlp_service.CLI, default_id, None)
        dlp_service.add_custom_rule(s, dlp_service.CLI, default_id, "secret-ref", "SREF", r"\bSR-\d{4}\b")
    gateway.flush()
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=[{"role": "user", "content": f"hi {EMAIL}"}])
    gateway.flush()
    s, _ = login(gateway, "admin@beta.example", "password-123")
    html = _page(s, gateway)
    assert "beta" in html and "default" not in html and "secret-ref" not in html and "No activity yet" in html
    assert s.get(gateway.url + f"/admin/dlp/scope?org={default_id}").status_code == 404
    r = s.post(gateway.url + "/admin/dlp/scope", data={"csrf_token": csrf_of(html), "org": default_id,
                                                       "enabled": ""})
    assert r.status_code == 404
    with db.session_scope() as session:
        rule_id = session.query(DlpCustomRule).filter_by(name="secret-ref").one().id
    assert s.post(gateway.url + f"/admin/dlp/custom/{rule_id}/delete",
                  data={"csrf_token": csrf_of(html)}).status_code == 403
    with db.session_scope() as session:
        assert session.get(DlpCustomRule, rule_id) is not None
