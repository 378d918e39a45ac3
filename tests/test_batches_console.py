"""The console's Batches page: the list (org-scoped), the drill-down to requests, and cancel (CSRF,
audited, org admins and super-admins only)."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import select

from gateway import db, jobs
from gateway.models import AuditLog, Batch, Org
from gateway.services import tenancy
from tests.test_batches import jsonl, line
from tests.test_console import csrf_of, login


@pytest.fixture
def cgw(gateway_factory, fake_openai_batches):
    return gateway_factory(batch_poll_min_seconds=0, batch_poll_max_seconds=0)


def user(gw, org: str, email: str, role: str) -> None:
    with db.write_lock, db.session_scope() as s:
        org_id = s.scalar(select(Org).where(Org.name == org)).id
        tenancy.create_admin(s, email, "password-123", org_id=org_id, actor="test", role=role)


def submit(gw):
    sdk = gw.sdk()
    f = sdk.files.create(file=("in.jsonl", io.BytesIO(jsonl([line("first"), line("second")]))), purpose="batch")
    return sdk.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")


def test_batches_page_drill_down_and_cancel(cgw):
    b = submit(cgw)
    done = submit(cgw)
    for _ in range(4):
        jobs.poll_batches()
    s, _ = login(cgw, cgw.admin_email, cgw.admin_password)
    page = s.get(cgw.url + "/admin/batches")
    assert page.status_code == 200 and b.id in page.text and "fakebatch" in page.text
    assert 'href="/admin/batches"' in page.text  # the nav shows the entry
    detail = s.get(f"{cgw.url}/admin/batches/{done.id}")
    assert detail.status_code == 200 and "first" in detail.text and "second" in detail.text
    assert "saved" in detail.text.lower()
    # A fresh batch, cancelled from the console: without the CSRF token refused, with it audited
    fresh = submit(cgw)
    assert s.post(f"{cgw.url}/admin/batches/{fresh.id}/cancel").status_code == 400
    token = csrf_of(s.get(f"{cgw.url}/admin/batches/{fresh.id}").text)
    r = s.post(f"{cgw.url}/admin/batches/{fresh.id}/cancel", data={"csrf_token": token})
    assert r.status_code == 200 and "cancelling" in r.text
    with db.session_scope() as session:
        assert session.scalar(select(Batch.status).where(Batch.public_id == fresh.id)) == "cancelling"
        entry = session.scalar(select(AuditLog).where(AuditLog.action == "batch.cancel"))
        assert entry.target == fresh.id and entry.actor == cgw.admin_email
    # A finished batch cannot be cancelled
    token = csrf_of(s.get(f"{cgw.url}/admin/batches/{done.id}").text) if "csrf_token" in s.get(
        f"{cgw.url}/admin/batches/{done.id}").text else token
    assert s.post(f"{cgw.url}/admin/batches/{done.id}/cancel", data={"csrf_token": token}).status_code == 409


def test_other_orgs_admins_and_members_are_kept_out(cgw):
    b = submit(cgw)
    cgw.new_org("other")
    user(cgw, "other", "boss@other.test", "org-admin")
    user(cgw, "default", "member@default.test", "member")
    s, _ = login(cgw, "boss@other.test", "password-123")
    assert b.id not in s.get(cgw.url + "/admin/batches").text
    assert s.get(f"{cgw.url}/admin/batches/{b.id}").status_code == 404
    token = csrf_of(s.get(cgw.url + "/admin/batches").text)
    assert s.post(f"{cgw.url}/admin/batches/{b.id}/cancel", data={"csrf_token": token}).status_code == 404
    m, _ = login(cgw, "member@default.test", "password-123")
    assert m.get(cgw.url + "/admin/batches").status_code == 403
    with db.session_scope() as session:
        assert session.scalar(select(Batch.status).where(Batch.public_id == b.id)) != "cancelling"
