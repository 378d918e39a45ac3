"""Roles across the console, table-driven over every registered admin endpoint (a new page is covered
the moment it registers): a member reaches only their password, sign-out and their own dashboard
(any other page redirects there, any other write is a 403); an org-admin is refused the super-admins'
pages and never sees another org's people, apps or keys; a super-admin opens every page. The
services refuse a member's write even when called directly."""

import re

import pytest
from flask import url_for
from sqlalchemy import select
from werkzeug.routing import IntegerConverter

from gateway import db
from gateway.admin.blueprint import MEMBER_ENDPOINTS
from gateway.admin.nav import GROUPS
from gateway.models import Alias, Org, User
from gateway.services import routing as routing_service
from gateway.services import tenancy
from gateway.services.errors import Forbidden
from tests.test_routing_console import Console, admin

PASSWORD = "password-123"
HIDDEN = "zz-hidden"  # every name of the other org carries it
# Pages a super-admin alone may open (their views refuse others): the nav's super-admin entries and
# the few pages that are not in the nav.
SUPERADMIN_ONLY = {e.endpoint for _, entries in GROUPS for e in entries if e.role == "super-admin"} | {
    "admin.org_credits_form"}
NEEDS_QUERY = {"admin.dlp_scope", "admin.export_csv"}  # a form or file for one scope, named in the query


def person(gateway, org: str | None, email: str, role: str) -> Console:
    """A console user of `org` with `role`, signed in."""
    with db.write_lock, db.session_scope() as s:
        org_id = s.scalar(select(Org.id).where(Org.name == org)) if org else None
        tenancy.create_admin(s, email, PASSWORD, superadmin=role == "super-admin", org_id=org_id, role=role,
                             actor="test")
    return Console(gateway, email, PASSWORD)


def hidden_org(gateway) -> None:
    """Another org with a user, an app and a key whose names all say HIDDEN."""
    gateway.new_org(HIDDEN)
    with db.write_lock, db.session_scope() as s:
        org = tenancy.org_by_name(s, HIDDEN)
        user = tenancy.create_user(s, org, f"spy@{HIDDEN}.example", actor="test").user
        app = tenancy.create_app(s, org, f"{HIDDEN}-app", contact_email=f"ops@{HIDDEN}.example", actor="test")
        tenancy.create_key(s, org, name=f"{HIDDEN}-key", user_id=user.id, actor="test")
        tenancy.create_key(s, org, name=f"{HIDDEN}-app-key", app_id=app.id, actor="test")
    gateway.flush()


def admin_rules(gateway) -> list[tuple[str, str, set[str]]]:
    """(endpoint, a URL for it, methods) for every console route, path arguments filled in."""
    app = gateway.app
    out = []
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            if not rule.endpoint.startswith("admin.") or rule.endpoint == "admin.static":
                continue
            values = {arg: 999_999 if isinstance(rule._converters[arg], IntegerConverter) else "x"
                      for arg in rule.arguments}
            out.append((rule.endpoint, url_for(rule.endpoint, **values), set(rule.methods) - {"HEAD", "OPTIONS"}))
    assert len(out) > 40  # the console's pages and forms, not an empty table
    return out


def test_a_member_reaches_only_their_dashboard_password_and_sign_out(gateway):
    gateway.new_org("alpha")
    member = person(gateway, "alpha", "m@alpha.example", "member")
    checked = 0
    for endpoint, url, methods in admin_rules(gateway):
        if endpoint in MEMBER_ENDPOINTS:
            continue
        if "GET" in methods:
            r = member.get(url, allow_redirects=False)
            assert r.status_code == 302 and r.headers["Location"].endswith("/dashboard"), (endpoint, r.status_code)
            part = member.get(url, htmx=True, allow_redirects=False)
            assert part.status_code == 204 and part.headers["HX-Redirect"] == "/dashboard", endpoint
        if "POST" in methods:
            r = member.post(url, {"org": "1", "name": "x", "amount": "5"})
            assert r.status_code == 403, (endpoint, r.status_code)
        checked += 1
    assert checked > 40
    # what they may open
    assert member.get("/admin/password").status_code == 200
    home = member.get("/dashboard")
    assert home.status_code == 200 and "<h1>My dashboard</h1>" in home.text
    nav = re.search(r"<nav>(.*?)</nav>", home.text, re.S).group(1)
    assert re.findall(r'href="([^"]+)"', nav) == ["/dashboard"]  # the nav offers nothing they would be refused
    assert member.post("/admin/logout", {}).status_code == 302
    assert member.get("/dashboard", allow_redirects=False).status_code == 302  # signed out


def test_a_member_signing_in_lands_on_their_dashboard(gateway):
    gateway.new_org("alpha")
    person(gateway, "alpha", "m@alpha.example", "member")
    from tests.test_console import login

    _, r = login(gateway, "m@alpha.example", PASSWORD)
    assert r.status_code == 200 and r.url.endswith("/dashboard")
    _, r = login(gateway, gateway.admin_email, gateway.admin_password)
    assert r.url.endswith("/admin/")  # admins land on the console's Home


def test_an_org_admin_is_refused_super_admin_pages_and_never_sees_another_org(gateway):
    gateway.new_org("alpha")
    hidden_org(gateway)
    alpha = person(gateway, "alpha", "a@alpha.example", "org-admin")
    opened = 0
    for endpoint, url, methods in admin_rules(gateway):
        if "GET" not in methods or endpoint in MEMBER_ENDPOINTS:
            continue
        r = alpha.get(url, allow_redirects=False)
        if endpoint in SUPERADMIN_ONLY:
            assert r.status_code == 403, (endpoint, r.status_code)
            continue
        assert r.status_code in (200, 302, 400, 403, 404), (endpoint, r.status_code)  # never a 500
        if r.status_code == 200:
            assert HIDDEN not in r.text, endpoint
            opened += 1
    assert opened >= 15
    nav = re.search(r"<nav>(.*?)</nav>", alpha.get("/admin/users").text, re.S).group(1)
    for endpoint in SUPERADMIN_ONLY & set(gateway.app.view_functions):
        with gateway.app.test_request_context():
            assert f'href="{url_for(endpoint)}"' not in nav, endpoint


def test_a_super_admin_opens_every_page(gateway):
    hidden_org(gateway)
    console = admin(gateway)
    for endpoint, url, methods in admin_rules(gateway):
        if "GET" not in methods or any(a in url for a in ("999999", "/x")) or endpoint in MEMBER_ENDPOINTS:
            continue  # pages of one row need a real row; login, logout and password are the account's
        r = console.get(url, allow_redirects=False)
        assert r.status_code in (200, 302) or (r.status_code == 400 and endpoint in NEEDS_QUERY), endpoint
    for path in ("/admin/users", "/admin/apps", "/admin/keys", "/admin/orgs"):
        assert HIDDEN in console.get(path).text, path  # every org's rows


def test_the_services_refuse_a_members_write_whatever_page_calls_them(gateway):
    gateway.new_org("alpha")
    person(gateway, "alpha", "m@alpha.example", "member")
    with db.session_scope() as s:
        user = s.scalar(select(User).where(User.email == "m@alpha.example"))
        alpha_id = user.org_id

    class Member:  # what the console passes as the actor
        email, is_superadmin, org_id, role = "m@alpha.example", False, alpha_id, "member"

    class OrgAdmin(Member):
        role = "org-admin"

    with db.write_lock, db.session_scope() as s, pytest.raises(Forbidden):
        routing_service.put_alias(s, Member(), "sneaky", alpha_id, "test/cheap")
    with db.write_lock, db.session_scope() as s:  # the same write by the org's admin is fine
        routing_service.put_alias(s, OrgAdmin(), "allowed", alpha_id, "test/cheap")
    with db.session_scope() as s:
        assert {a.name for a in s.scalars(select(Alias).where(Alias.org_id == alpha_id))} == {"allowed"}
