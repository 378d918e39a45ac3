"""Every console page, per role, in real Chromium: a super-admin and an org-admin sign in and open
every entry of their grouped nav (each answers 200 with its heading and no server error), the
org-admin's nav holds no super-admin page and those pages refuse them; a member's nav is their
dashboard alone, and every console page they try sends them there.

The browser is conftest's `page`; every wait has a generous timeout, nothing sleeps.
"""

from gateway.admin.nav import GROUPS, RANK
from tests.test_console_roles import PASSWORD
from tests.test_people_browser import add_person, nav_links, sign_in

SUPER_ONLY = {e.endpoint for _, entries in GROUPS for e in entries if RANK[e.role] == RANK["super-admin"]}


def walk(page, gateway, links: list[str]) -> None:
    for href in links:
        resp = page.goto(gateway.url + href)
        assert resp is not None and resp.status == 200, href
        assert page.locator("h1").count() >= 1, href
        assert "Internal Server Error" not in page.content(), href


def paths_of(gateway, endpoints) -> set[str]:
    with gateway.app.test_request_context():
        from flask import url_for

        return {url_for(e) for e in endpoints if e in gateway.app.view_functions}


def test_a_super_admin_opens_every_page_of_the_nav(gateway, page):
    sign_in(page, gateway, gateway.admin_email, gateway.admin_password, "/admin/")
    links = nav_links(page)
    assert paths_of(gateway, SUPER_ONLY) <= set(links)  # their pages are all in the nav
    walk(page, gateway, links)


def test_an_org_admin_opens_their_pages_and_not_the_super_admins(gateway, page):
    gateway.new_org("alpha", usd=5)
    add_person(gateway, "alpha", "boss@alpha.example", "org-admin")
    sign_in(page, gateway, "boss@alpha.example", PASSWORD, "/admin/")
    links = nav_links(page)
    hidden = paths_of(gateway, SUPER_ONLY)
    assert links and not hidden & set(links)
    walk(page, gateway, links)
    for href in hidden:
        resp = page.goto(gateway.url + href)
        assert resp is not None and resp.status == 403, href


def test_a_member_sees_only_their_dashboard(gateway, page):
    gateway.new_org("alpha", usd=5)
    add_person(gateway, "alpha", "dev@alpha.example", "member")
    sign_in(page, gateway, "dev@alpha.example", PASSWORD, "/dashboard")
    assert nav_links(page) == ["/dashboard"]
    for href in ("/admin/", "/admin/logs", "/admin/users", "/admin/usage", "/admin/keys", "/admin/providers"):
        page.goto(gateway.url + href)
        assert page.url.endswith("/dashboard"), href
