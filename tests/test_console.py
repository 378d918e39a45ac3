"""The admin console over real HTTP: sign-in with CSRF and lockout, Gateway logs, org isolation."""

import re

import openai
import pytest
import requests

from gateway import db
from gateway.models import Org
from gateway.services import tenancy

MSG = [{"role": "user", "content": "hi"}]


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def login(gateway, email, password) -> tuple[requests.Session, requests.Response]:
    s = requests.Session()
    token = csrf_of(s.get(gateway.url + "/admin/login").text)
    r = s.post(gateway.url + "/admin/login", data={"email": email, "password": password, "csrf_token": token})
    return s, r


def org_admin(gateway, org_name: str, email: str) -> None:
    with db.write_lock, db.session_scope() as s:
        org = s.query(Org).filter_by(name=org_name).one()
        tenancy.create_admin(s, email, "password-123", org_id=org.id, actor="test")


def test_console_requires_login(gateway):
    r = requests.get(gateway.url + "/admin/logs", allow_redirects=False)
    assert r.status_code == 302 and "/admin/login" in r.headers["Location"]


def test_login_needs_the_csrf_token(gateway):
    r = requests.post(gateway.url + "/admin/login", data={"email": gateway.admin_email,
                                                          "password": gateway.admin_password})
    assert r.status_code == 400


def test_login_and_see_requests_in_gateway_logs(gateway):
    raw = gateway.sdk().chat.completions.with_raw_response.create(model="fast", messages=MSG)
    gateway.flush()
    s, r = login(gateway, gateway.admin_email, gateway.admin_password)
    assert r.status_code == 200 and "<h1>Home</h1>" in r.text  # sign-in lands on Home
    r = s.get(gateway.url + "/admin/logs")
    assert "<h1>Gateway logs</h1>" in r.text
    request_id = raw.headers["x-request-id"]
    assert f'data-request-id="{request_id}"' in r.text
    # the same view returns only the table rows to htmx
    part = s.get(gateway.url + "/admin/logs", headers={"HX-Request": "true"})
    assert part.text.lstrip().startswith("<tr") and "HX-Request" in part.headers["Vary"]
    detail = s.get(gateway.url + f"/admin/logs/{request_id}")
    assert detail.status_code == 200 and request_id in detail.text and "test/fake-gpt" in detail.text
    assert gateway.api_key not in detail.text and gateway.api_key not in r.text


def test_logs_filter_by_model_and_status(gateway):
    sdk = gateway.sdk()
    ok = sdk.chat.completions.with_raw_response.create(model="test/fake-gpt", messages=MSG)
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model="test/error-429", messages=MSG)
    gateway.flush()
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    errors = s.get(gateway.url + "/admin/logs", params={"status": "error"}, headers={"HX-Request": "true"}).text
    assert "test/error-429" in errors and ok.headers["x-request-id"] not in errors
    by_model = s.get(gateway.url + "/admin/logs", params={"model": "test/fake-gpt"}).text
    assert ok.headers["x-request-id"] in by_model and "test/error-429" not in by_model


def test_an_org_admin_never_sees_another_orgs_logs(gateway):
    gateway.new_org("alpha")
    gateway.new_org("bravo")
    a = gateway.sdk(gateway.new_key("alpha")).chat.completions.with_raw_response.create(model="fast", messages=MSG)
    b = gateway.sdk(gateway.new_key("bravo")).chat.completions.with_raw_response.create(model="fast", messages=MSG)
    gateway.flush()
    org_admin(gateway, "alpha", "a@alpha.example")
    s, home = login(gateway, "a@alpha.example", "password-123")
    assert "bravo" not in home.text  # Home names no other org
    r = s.get(gateway.url + "/admin/logs")
    assert a.headers["x-request-id"] in r.text
    assert b.headers["x-request-id"] not in r.text and "bravo" not in r.text
    # not even by asking for the other org's filter or its request directly
    bravo_id = gateway.org("bravo").id
    assert b.headers["x-request-id"] not in s.get(gateway.url + "/admin/logs", params={"org": bravo_id}).text
    assert s.get(gateway.url + f"/admin/logs/{b.headers['x-request-id']}").status_code == 404
    # the super-admin sees both
    s2, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    r2 = s2.get(gateway.url + "/admin/logs")
    assert a.headers["x-request-id"] in r2.text and b.headers["x-request-id"] in r2.text


def test_repeated_failed_logins_lock_the_account(gateway):
    for _ in range(5):
        _, r = login(gateway, gateway.admin_email, "wrong-password")
        assert r.status_code == 401 and "Wrong email or password." in r.text
    _, r = login(gateway, gateway.admin_email, gateway.admin_password)  # right password, but locked
    assert r.status_code == 401 and "locked" in r.text


def test_logout_ends_the_session(gateway):
    s, r = login(gateway, gateway.admin_email, gateway.admin_password)
    s.post(gateway.url + "/admin/logout", data={"csrf_token": csrf_of(r.text)})
    assert s.get(gateway.url + "/admin/logs", allow_redirects=False).status_code == 302


def test_passwords_are_stored_hashed(gateway):
    from gateway.models import User

    with db.session_scope() as s:
        user = s.query(User).filter_by(email=gateway.admin_email).one()
    assert gateway.admin_password not in user.password_hash and user.password_hash.startswith("scrypt$")
