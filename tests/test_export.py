"""The activity export: a CSV of one user's, app's or org's requests streamed with a keyset walk
(pages of bounded size, each read after the last row seen; the first bytes leave before the rest
is read), conversations where content logging kept them, formula cells defused, scoped per org."""

import csv
import io
from datetime import datetime, timedelta

import pytest
from sqlalchemy import event, insert, select

from gateway import db
from gateway.admin import export
from gateway.models import LedgerEntry, Org, User, utcnow
from gateway.services import tenancy
from tests.test_console import csrf_of, login, org_admin

MSG = [{"role": "user", "content": "hello there"}]


def member_with_key(gateway, org: str, email: str) -> tuple[int, str]:
    with db.write_lock, db.session_scope() as s:
        o = tenancy.org_by_name(s, org)
        user = tenancy.create_admin(s, email, "password-123", org_id=o.id, role="member", actor="test")
        secret = tenancy.create_key(s, o, name="k", user_id=user.id, actor="test").secret
        uid = user.id
    gateway.flush()
    return uid, secret


def parse(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_a_users_export_streams_their_requests_with_the_conversation(gateway):
    uid, key = member_with_key(gateway, "default", "ann@example.com")
    _, other = member_with_key(gateway, "default", "ben@example.com")
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    token = csrf_of(s.get(gateway.url + "/admin/export").text)
    s.post(gateway.url + "/admin/export/content-logging", data={"csrf_token": token, "org": gateway.org().id,
                                                                 "days": "7"})
    gateway.flush()
    sdk = gateway.sdk(key)
    first = sdk.chat.completions.with_raw_response.create(model="test/fake-gpt", messages=MSG)
    sdk.chat.completions.create(model="test/cheap", messages=MSG)
    gateway.sdk(other).chat.completions.create(model="test/fake-gpt", messages=MSG)
    gateway.flush()
    today = utcnow().date().isoformat()
    with s.get(gateway.url + "/admin/export.csv", params={"party": "user", "id": uid, "start": today, "end": today},
               stream=True) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
        assert "attachment" in r.headers["Content-Disposition"]
        assert r.headers.get("Transfer-Encoding") == "chunked"  # streamed, not buffered to a length
        rows = parse(r.content.decode())
    assert [row["model_requested"] for row in rows] == ["test/fake-gpt", "test/cheap"]
    row = rows[0]
    ledger = gateway.rows(request_id=first.headers["x-request-id"])[0]
    assert row["request_id"] == ledger.request_id and row["model_actual"] == "test/fake-gpt"
    assert row["provider"] == "fake" and int(row["input_tokens"]) == ledger.input_tokens
    assert row["status"] == "200" and int(row["latency_ms"]) == ledger.latency_ms
    assert row["input_text"] == "user: hello there"
    assert row["output_text"] == first.parse().choices[0].message.content
    with db.session_scope() as session:
        from gateway.models import AuditLog

        assert session.scalar(select(AuditLog).where(AuditLog.action == "export.csv")).target == \
            "user ann@example.com"


def test_an_org_admin_exports_their_own_org_only(gateway):
    gateway.new_org("bravo")
    bravo_user, bravo_key = member_with_key(gateway, "bravo", "bob@bravo.example")
    gateway.sdk(bravo_key).chat.completions.create(model="test/fake-gpt", messages=MSG)
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=MSG)
    gateway.flush()
    org_admin(gateway, "default", "adm@default.example")
    s, _ = login(gateway, "adm@default.example", "password-123")
    bravo_id = gateway.org("bravo").id
    assert s.get(gateway.url + "/admin/export.csv", params={"party": "user", "id": bravo_user}).status_code == 404
    assert s.get(gateway.url + "/admin/export.csv", params={"party": "org", "id": bravo_id}).status_code == 404
    own = parse(s.get(gateway.url + "/admin/export.csv", params={"party": "org", "id": gateway.org().id}).text)
    assert len(own) == 1
    page = s.get(gateway.url + "/admin/export").text
    assert "bob@bravo.example" not in page
    admin, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    assert len(parse(admin.get(gateway.url + "/admin/export.csv",
                               params={"party": "org", "id": bravo_id}).text)) == 1


@pytest.mark.parametrize("params", [{"party": "user"}, {"party": "nobody", "id": 1}, {"party": "user", "id": 1,
                                    "start": "yesterday"}, {"party": "org", "id": 1, "start": "2030-01-02",
                                    "end": "2030-01-01"}])
def test_bad_export_requests_are_a_400(gateway, params):
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    assert s.get(gateway.url + "/admin/export.csv", params=params).status_code == 400


def bulk_rows(org_id: int, user_id: int, n: int, start: datetime, model: str = "test/fake-gpt") -> None:
    rows = [{"request_id": f"req_bulk_{i:08d}", "org_id": org_id, "user_id": user_id, "endpoint": "chat.completions",
             "requested_model": model, "model": model, "provider": "fake", "status": 200, "input_tokens": 3,
             "output_tokens": 5, "charge_micros": 7, "benchmark_micros": 9, "saved_micros": 2, "latency_ms": 11,
             "created_at": start + timedelta(seconds=i // 3)} for i in range(n)]  # three rows share each second
    with db.write_lock, db.session_scope() as s:
        s.execute(insert(LedgerEntry), rows)


def test_the_export_is_read_page_by_page_and_yields_before_reading_the_rest(gateway):
    uid, _ = member_with_key(gateway, "default", "ann@example.com")
    start = datetime(2030, 1, 1)
    bulk_rows(gateway.org().id, uid, 500, start)
    queries: list[str] = []

    def count(conn, cursor, statement, *args):
        if "FROM ledger_entry" in statement:
            queries.append(statement)

    event.listen(db.engine(), "before_cursor_execute", count)
    try:
        with gateway.app.app_context():
            walk = export.pages("user", uid, None, start, start + timedelta(days=1), page=50)
            chunks = export.csv_chunks(walk, flush_bytes=1)  # every row handed on as it is written
            header = next(chunks)
            assert header.startswith(b"time,request_id") and queries == []  # nothing read yet
            first = next(chunks)
            assert len(queries) == 1 and "LIMIT" in queries[0]  # one page of 50 read, not the 500 rows
            rest = b"".join(chunks)
    finally:
        event.remove(db.engine(), "before_cursor_execute", count)
    rows = parse((header + first + rest).decode())
    assert [r["request_id"] for r in rows] == [f"req_bulk_{i:08d}" for i in range(500)]  # each once, in order
    assert len(queries) == 11  # ten full pages of 50, then an empty read


def test_each_page_is_one_indexed_range_read(gateway):
    with db.engine().connect() as conn:
        for party in ("user", "app", "org"):
            q = export.page_query(party, 1, [1], (datetime(2030, 1, 1), 5), datetime(2030, 1, 2), 10)
            compiled = q.compile(db.engine(), compile_kwargs={"literal_binds": True})
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
            assert "USING INDEX" in plan and "TEMP B-TREE" not in plan, (party, plan)


def test_cells_a_spreadsheet_would_run_are_defused(gateway):
    uid, _ = member_with_key(gateway, "default", "ann@example.com")
    start = utcnow().replace(microsecond=0)
    bulk_rows(gateway.org().id, uid, 1, start, model="=HYPERLINK(\"http://x\")")
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    [row] = parse(s.get(gateway.url + "/admin/export.csv", params={"party": "user", "id": uid}).text)
    assert row["model_requested"] == "'=HYPERLINK(\"http://x\")"


def test_the_export_page_and_the_usage_link(gateway):
    uid, key = member_with_key(gateway, "default", "ann@example.com")
    gateway.sdk(key).chat.completions.create(model="test/fake-gpt", messages=MSG)
    gateway.flush()
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    usage = s.get(gateway.url + "/admin/usage").text
    assert f"/admin/export?party=user&amp;id={uid}" in usage
    page = s.get(gateway.url + f"/admin/export?party=user&id={uid}").text
    assert 'id="export-form"' in page and f'<option value="{uid}" selected>ann@example.com</option>' in page
    with db.session_scope() as session:
        assert session.get(User, uid).org_id == session.scalar(select(Org.id).where(Org.name == "default"))
