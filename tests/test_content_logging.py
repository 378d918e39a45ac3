"""Content logging: off by default; an org (or app) turns it on with a retention from the console
(audited, its own org only); the conversation is kept encrypted (AES-256-GCM), written by the
ledger writer (no statement on the request path), exported with the activity CSV, and deleted
past its retention by a scheduled job."""

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from gateway import db, jobs
from gateway.models import App, AuditLog, ContentLog, ContentLogSetting, utcnow
from gateway.stores.content_log import SETTINGS, input_text, output_text
from tests.conftest import database_statements
from tests.test_console import csrf_of, login, org_admin

MSG = [{"role": "user", "content": "my secret plan is pineapples"}]


def stored(gateway) -> list[ContentLog]:
    gateway.flush()
    with db.session_scope() as s:
        return list(s.scalars(select(ContentLog).order_by(ContentLog.id)))


def set_logging(gateway, session, org_id: int, days: str, app_id: int | None = None):
    token = csrf_of(session.get(gateway.url + "/admin/export").text)
    data = {"csrf_token": token, "org": org_id, "days": days}
    if app_id:
        data["app"] = app_id
    r = session.post(gateway.url + "/admin/export/content-logging", data=data, headers={"HX-Request": "true"})
    gateway.flush()
    return r


def test_off_by_default(gateway):
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=MSG)
    assert stored(gateway) == []
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    page = s.get(gateway.url + "/admin/export").text
    assert f'data-org="{gateway.org().id}"' in page and ">off<" in page


def test_turned_on_conversations_are_kept_encrypted_for_the_retention(gateway):
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    r = set_logging(gateway, s, gateway.org().id, "30")
    assert r.status_code == 200 and "Content logging: on, 30 days." in r.text
    raw = gateway.sdk().chat.completions.with_raw_response.create(model="test/fake-gpt", messages=MSG)
    answer = raw.parse().choices[0].message.content
    stream = gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=MSG, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    rows = stored(gateway)
    assert len(rows) == 2
    row = rows[0]
    assert row.request_id == raw.headers["x-request-id"] and row.org_id == gateway.org().id
    assert b"pineapples" not in row.input_enc and answer.encode() not in row.output_enc  # encrypted at rest
    said, answered = SETTINGS.decrypt(row)
    assert said == "user: my secret plan is pineapples" and answered == answer
    assert SETTINGS.decrypt(rows[1]) == (said, streamed)
    assert timedelta(days=29, hours=23) < row.expires_at - row.created_at <= timedelta(days=30, seconds=5)
    with db.session_scope() as session:
        audit = session.scalar(select(AuditLog).where(AuditLog.action == "content_logging.set"))
        assert audit.actor == gateway.admin_email and audit.detail == "retention_days=30"
    # off again: new requests are not kept
    set_logging(gateway, s, gateway.org().id, "off")
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=MSG)
    assert len(stored(gateway)) == 2


def test_capture_makes_no_database_statement_on_the_request_path(gateway):
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    set_logging(gateway, s, gateway.org().id, "7")
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=MSG)  # warm
    gateway.flush()
    with database_statements() as statements:
        gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=MSG)
    assert statements == []
    assert len(stored(gateway)) == 2  # written afterwards, by the writer


def test_an_org_admin_sets_their_own_org_only_and_logs_stay_in_their_org(gateway):
    bravo = gateway.new_org("bravo")
    org_admin(gateway, "bravo", "admin@bravo.example")
    s, _ = login(gateway, "admin@bravo.example", "password-123")
    page = s.get(gateway.url + "/admin/export").text
    assert f'data-org="{bravo.id}"' in page and f'data-org="{gateway.org().id}"' not in page
    assert set_logging(gateway, s, gateway.org().id, "30").status_code == 403
    with db.session_scope() as session:
        assert session.scalars(select(ContentLogSetting)).all() == []
    assert "on, 5 days" in set_logging(gateway, s, bravo.id, "5").text
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=MSG)  # default: off
    bravo_key = gateway.new_key("bravo")
    gateway.sdk(bravo_key).chat.completions.create(model="test/fake-gpt", messages=MSG)
    rows = stored(gateway)
    assert [r.org_id for r in rows] == [bravo.id]


def test_an_apps_own_setting_wins_over_its_orgs(gateway):
    from gateway.services import tenancy

    with db.write_lock, db.session_scope() as session:
        org = tenancy.org_by_name(session, "default")
        app = App(org_id=org.id, name="Quiet app")
        session.add(app)
        session.flush()
        app_id = app.id
        app_key = tenancy.create_key(session, org, name="app", app_id=app_id, actor="test").secret
    gateway.flush()
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    set_logging(gateway, s, gateway.org().id, "10")
    r = set_logging(gateway, s, gateway.org().id, "off", app_id=app_id)
    assert r.status_code == 200
    row = r.text.split(f'data-app="{app_id}"')[1].split("</tr>")[0]
    assert ">off<" in row.replace(" ", "")
    gateway.sdk(app_key).chat.completions.create(model="test/fake-gpt", messages=MSG)
    assert stored(gateway) == []
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=MSG)
    assert len(stored(gateway)) == 1


@pytest.mark.parametrize("days", ["-1", "abc", "99999", "1.5"])
def test_a_bad_retention_is_explained(gateway, days):
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    r = set_logging(gateway, s, gateway.org().id, days)
    assert r.status_code == 200 and 'class="error"' in r.text
    with db.session_scope() as session:
        assert session.scalars(select(ContentLogSetting)).all() == []


def test_the_retention_job_deletes_expired_conversations(gateway):
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    set_logging(gateway, s, gateway.org().id, "1")
    for _ in range(3):
        gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=MSG)
    rows = stored(gateway)
    with db.write_lock, db.session_scope() as session:
        session.execute(update(ContentLog).where(ContentLog.id.in_([r.id for r in rows[:2]]))
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
    assert (jobs.prune_content_log, 3600) in jobs.SCHEDULE
    jobs.once(jobs.prune_content_log, 3600)()
    assert [r.id for r in stored(gateway)] == [rows[2].id]


def test_status_partial_for_the_orgs_page(gateway):
    from flask import render_template

    from gateway.admin.blueprint import LoginUser

    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    set_logging(gateway, s, gateway.org().id, "14")
    with gateway.app.test_request_context("/admin/orgs"):
        import flask_login

        from gateway.models import User

        with db.session_scope() as session:
            user = session.scalar(select(User).where(User.email == gateway.admin_email))
            flask_login.login_user(LoginUser(user))
        html = render_template("admin/content_logging/_status.html", org=gateway.org())
    assert "Content logging: on, 14 days" in html


def test_the_orgs_and_apps_pages_show_content_logging(gateway):
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)

    def org_row() -> str:
        return s.get(gateway.url + "/admin/orgs").text.split(f'data-org="{gateway.org().name}"')[1].split("</tr>")[0]

    assert "<td data-content-logging>off</td>" in org_row()
    set_logging(gateway, s, gateway.org().id, "14")
    assert "<td data-content-logging>on, 14 days</td>" in org_row()
    with db.write_lock, db.session_scope() as session:
        session.add(App(org_id=gateway.org().id, slug="web", name="Web"))
    apps = s.get(gateway.url + "/admin/apps").text
    app_row = apps.split('data-app="web"')[1].split("</tr>")[0]
    assert "<td data-content-logging>on, 14 days</td>" in app_row  # the app follows its org


def test_texts_from_every_dialect():
    assert input_text({"system": "be brief", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}]},
        {"role": "assistant", "content": "b"}]}) == "system: be brief\nuser: a\nassistant: b"
    assert input_text({"input": "hello"}) == "user: hello"
    assert output_text(b'{"content": [{"type": "text", "text": "hi"}]}', None) == "hi"
    assert output_text(b'{"output": [{"type": "message", "content": [{"type": "output_text", "text": "yo"}]}]}',
                       None) == "yo"
    sse = [b'data: {"type": "response.output_text.delta", "delta": "a"}\n\n',
           b'data: {"type": "response.completed", "response": {"output": [{"type": "message", '
           b'"content": [{"text": "a"}]}]}}\n\n',
           b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": {"type": "text_delta", '
           b'"text": "b"}}\n\n', b"data: [DONE]\n\n", b"data: {broken\n\n"]
    assert output_text(None, sse) == "ab"
    deep: object = "x"
    for _ in range(5000):
        deep = [deep]
    assert input_text({"messages": [{"role": "user", "content": deep}]}) == "user: "


def test_conversations_are_kept_as_the_provider_saw_them_after_data_protection(gateway):
    from tests.test_dlp import EMAIL, protect

    protect(gateway)
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    set_logging(gateway, s, gateway.org().id, "7")
    reply = gateway.sdk().chat.completions.create(model="test/echo", messages=[
        {"role": "user", "content": f"write to {EMAIL}"}])
    assert EMAIL in reply.choices[0].message.content  # the client gets the value back
    [row] = stored(gateway)
    said, answered = SETTINGS.decrypt(row)
    assert EMAIL not in said and EMAIL not in answered  # kept in placeholder form
    assert said.startswith("user: write to ") and answered
