"""Console sessions: cookie flags (Secure behind a trusted https proxy), sign-out and password
change end every session, one-time passwords are changed at the first sign-in, unknown emails cost
a password hash, and the instance folder and its files are private."""

import re
import stat

import pytest
import requests
from sqlalchemy import select

from gateway import crypto, db
from gateway.admin import auth
from gateway.models import AuditLog, User
from gateway.services import tenancy
from tests.test_console import csrf_of, login

NEW_PASSWORD = "a-much-better-passphrase"


def change_password(gw, s: requests.Session, current: str, new: str, repeat: str | None = None):
    token = csrf_of(s.get(gw.url + "/admin/password").text)
    return s.post(gw.url + "/admin/password", data={"current": current, "new": new, "repeat": repeat or new,
                                                     "csrf_token": token})


def session_cookie(r: requests.Response) -> str:
    headers = r.raw.headers.getlist("Set-Cookie") if hasattr(r.raw.headers, "getlist") else [r.headers["Set-Cookie"]]
    return next(h for h in headers if h.startswith("session="))


def raw_login(gw, headers=None) -> requests.Response:
    s = requests.Session()
    token = csrf_of(s.get(gw.url + "/admin/login", headers=headers).text)
    return s.post(gw.url + "/admin/login", headers=headers, allow_redirects=False,
                  data={"email": gw.admin_email, "password": gw.admin_password, "csrf_token": token})


def test_session_cookie_is_httponly_and_lax_and_not_secure_over_http(gateway):
    cookie = session_cookie(raw_login(gateway)).lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie.replace("samesite", "")
    # X-Forwarded-Proto from an untrusted client changes nothing
    cookie = session_cookie(raw_login(gateway, {"X-Forwarded-Proto": "https"})).lower()
    assert "; secure" not in cookie


def test_session_cookie_is_secure_behind_a_trusted_https_proxy(gateway_factory):
    gw = gateway_factory(trusted_proxies=1)
    proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    page = requests.get(gw.url + "/admin/login", headers=proxy)
    assert "; secure" in session_cookie(page).lower()
    # the browser sends the Secure cookie back over https (here: to the proxy), with its Referer
    cookie = session_cookie(page).split(";")[0]
    r = requests.post(gw.url + "/admin/login", allow_redirects=False,
                      headers={**proxy, "Cookie": cookie, "Referer": gw.url.replace("http:", "https:") + "/admin/login"},
                      data={"email": gw.admin_email, "password": gw.admin_password, "csrf_token": csrf_of(page.text)})
    assert r.status_code == 302
    assert "; secure" in session_cookie(r).lower()


def test_a_cookie_saved_before_sign_out_opens_nothing_after(gateway):
    s, r = login(gateway, gateway.admin_email, gateway.admin_password)
    assert s.get(gateway.url + "/admin/orgs").status_code == 200
    saved = s.cookies.get("session")
    other, _ = login(gateway, gateway.admin_email, gateway.admin_password)  # a second browser
    token = csrf_of(s.get(gateway.url + "/admin/orgs").text)
    s.post(gateway.url + "/admin/logout", data={"csrf_token": token})
    replay = requests.get(gateway.url + "/admin/orgs", cookies={"session": saved}, allow_redirects=False)
    assert replay.status_code == 302 and "/admin/login" in replay.headers["Location"]
    # signing out ends every session of the user, the other browser's too
    assert other.get(gateway.url + "/admin/orgs", allow_redirects=False).status_code == 302


def test_password_change_needs_the_current_one_and_ends_other_sessions(gateway):
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    other, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    for current, new, repeat, says in [("wrong-password", NEW_PASSWORD, None, "current password is wrong"),
                                       (gateway.admin_password, NEW_PASSWORD, NEW_PASSWORD + "x", "differ"),
                                       (gateway.admin_password, "short", None, "at least")]:
        r = change_password(gateway, s, current, new, repeat)
        assert r.status_code == 400 and says in r.text
    r = change_password(gateway, s, gateway.admin_password, NEW_PASSWORD)
    assert r.status_code == 200 and "Gateway logs" in r.text
    assert s.get(gateway.url + "/admin/orgs").status_code == 200  # this session goes on
    assert other.get(gateway.url + "/admin/orgs", allow_redirects=False).status_code == 302
    _, old = login(gateway, gateway.admin_email, gateway.admin_password)
    assert old.status_code == 401
    _, new = login(gateway, gateway.admin_email, NEW_PASSWORD)
    assert new.status_code == 200
    with db.session_scope() as db_session:
        rows = list(db_session.scalars(select(AuditLog).where(AuditLog.action == "password.change")))
    assert len(rows) == 1 and rows[0].target == gateway.admin_email
    assert NEW_PASSWORD not in f"{rows[0].detail}" and gateway.admin_password not in f"{rows[0].detail}"


def test_the_first_admin_must_change_the_one_time_password(gateway_factory):
    gw = gateway_factory(first_password_changed=False)
    s, r = login(gw, gw.admin_email, gw.admin_password)
    assert r.url.endswith("/admin/password") and "issued for one sign-in" in r.text
    blocked = s.get(gw.url + "/admin/orgs", allow_redirects=False)
    assert blocked.status_code == 302 and blocked.headers["Location"].endswith("/admin/password")
    r = change_password(gw, s, gw.admin_password, NEW_PASSWORD)
    assert r.status_code == 200
    assert s.get(gw.url + "/admin/orgs").status_code == 200
    with db.session_scope() as db_session:
        user = db_session.scalar(select(User).where(User.email == gw.admin_email))
        assert user.must_change_password is False


def test_cli_passwords_are_one_time(gateway):
    out = gateway.cli("admin", "create", "--email", "ops@example.com").stdout
    password = re.search(r"one-time password: (\S+)", out).group(1)
    s, r = login(gateway, "ops@example.com", password)
    assert r.url.endswith("/admin/password")
    out = gateway.cli("admin", "reset-password", "--email", gateway.admin_email).stdout
    reset = re.search(r"one-time password: (\S+)", out).group(1)
    _, r = login(gateway, gateway.admin_email, gateway.admin_password)
    assert r.status_code == 401  # the old password is gone
    s, r = login(gateway, gateway.admin_email, reset)
    assert r.url.endswith("/admin/password")
    with db.session_scope() as db_session:
        details = " ".join(a.detail + a.target for a in db_session.scalars(select(AuditLog)))
    assert password not in details and reset not in details


def test_an_unknown_email_costs_one_password_hash_like_a_known_one(gateway, monkeypatch):
    calls = []
    real = crypto.check_password

    def counting(stored, password):
        calls.append(stored)
        return real(stored, password)

    monkeypatch.setattr(auth.crypto, "check_password", counting)
    _, r = login(gateway, "nobody@example.com", "whatever-password")
    assert r.status_code == 401 and len(calls) == 1 and calls[0].startswith("scrypt$")
    _, r = login(gateway, gateway.admin_email, "wrong-password")
    assert r.status_code == 401 and len(calls) == 2


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_instance_folder_and_files_are_private(gateway):
    gateway.sdk().chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    gateway.flush()
    assert _mode(gateway.instance) == 0o700
    for name in ("gateway.db", "gateway.db-wal", "gateway.db-shm"):
        path = gateway.instance / name
        if name == "gateway.db" or path.exists():
            assert _mode(path) == 0o600, name
    from gateway.ledger.writer import WRITER

    WRITER._spill([])
    assert _mode(WRITER.spill_path) == 0o600


def test_a_generated_secret_key_file_is_private(tmp_path):
    from gateway.settings import Settings

    instance = tmp_path / "fresh"
    instance.mkdir(mode=0o755)
    settings = Settings.load({"instance": instance})
    assert settings.secret_key and _mode(instance) == 0o700
    assert _mode(instance / "secret_key") == 0o600


def test_password_rules_are_the_services(gateway):
    with db.write_lock, db.session_scope() as s, pytest.raises(tenancy.AccountError):
        tenancy.create_admin(s, "x@example.com", "short", actor="test")


def test_a_super_admin_resets_a_password_to_a_one_time_one(gateway):
    from tests.test_console import org_admin
    from tests.test_routing_console import admin

    gateway.new_org("alpha")
    org_admin(gateway, "alpha", "a@alpha.example")
    victim, _ = login(gateway, "a@alpha.example", "password-123")
    console = admin(gateway)
    with db.session_scope() as db_session:
        user_id = db_session.scalar(select(User.id).where(User.email == "a@alpha.example"))
    page = console.post(f"/admin/users/{user_id}/reset", {})
    password = re.search(r'<code class="secret">([^<]+)</code>', page.text).group(1)
    assert victim.get(gateway.url + "/admin/logs", allow_redirects=False).status_code == 302  # session ended
    _, r = login(gateway, "a@alpha.example", password)
    assert r.url.endswith("/admin/password")
    org_console, _ = login(gateway, "a@alpha.example", password)
    assert org_console.get(gateway.url + "/admin/users", allow_redirects=False).status_code == 302  # password first
    change_password(gateway, org_console, password, NEW_PASSWORD)
    users = org_console.get(gateway.url + "/admin/users")  # an org-admin manages their own org's users
    assert users.status_code == 200 and "a@alpha.example" in users.text and gateway.admin_email not in users.text
    with db.session_scope() as db_session:
        audit = db_session.scalars(select(AuditLog).where(AuditLog.action == "password.reset")).all()
    assert len(audit) == 1 and password not in audit[0].detail


def test_hostile_password_forms_get_a_message_not_a_500(gateway):
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    for new, says in (("x" * 5000, "at most 1024"), ("\u0000" * 12, "control characters"),
                      (NEW_PASSWORD + "\u0000", "control characters")):  # NULs vanish inside scrypt's HMAC
        r = change_password(gateway, s, gateway.admin_password, new)
        assert r.status_code == 400 and says in r.text
    token = csrf_of(s.get(gateway.url + "/admin/password").text)
    body = f"csrf_token={token}&current=x&new=%ED%A0%80%FF%FE{'a' * 12}&repeat=%ED%A0%80%FF%FE{'a' * 12}"
    r = s.post(gateway.url + "/admin/password", data=body,  # a lone surrogate and invalid UTF-8
               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400
    r = s.post(gateway.url + "/admin/password", data={"csrf_token": token})  # fields missing
    assert r.status_code == 400 and "current password is wrong" in r.text, re.findall(r"role=\"alert\">([^<]*)", r.text)


def test_trusted_proxies_must_be_a_count(monkeypatch, tmp_path):
    from gateway.settings import Settings

    monkeypatch.setenv("GATEWAY_TRUSTED_PROXIES", "two")
    with pytest.raises(ValueError, match="GATEWAY_TRUSTED_PROXIES must be a whole number"):
        Settings.load({"instance": tmp_path / "i", "secret_key": "s"})
    monkeypatch.setenv("GATEWAY_TRUSTED_PROXIES", "2")
    assert Settings.load({"instance": tmp_path / "i", "secret_key": "s"}).trusted_proxies == 2
