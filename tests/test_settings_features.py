"""Gateway settings -> Features: a super-admin opens savings layers to self-service; an org switches
an opened layer for itself (services/features.py), and the savings layers of that org's requests
follow the choice, while the layer stays open. Only super-admins reach the page; an org's choice is
its own (another org, and another org's admin, are not touched); bad input writes nothing."""

from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from gateway import db
from gateway.models import AuditLog, FeatureOptIn, GatewaySetting
from gateway.services import features
from gateway.services.errors import AdminError, Forbidden
from tests.test_console import org_admin
from tests.test_routing_console import Console, admin, org_console

MSG = [{"role": "user", "content": "feature opt-in question"}]


@dataclass
class Who:
    email: str
    is_superadmin: bool = False
    org_id: int | None = None
    role: str = "org-admin"


ROOT = Who("root@example.com", is_superadmin=True, role="super-admin")


def member_console(gateway, org: str) -> Console:
    email = f"member@{org}.example"
    with db.write_lock, db.session_scope() as s:
        from gateway.services import tenancy

        tenancy.create_admin(s, email, "password-123", org_id=tenancy.org_by_name(s, org).id, role="member",
                             actor="test")
    return Console(gateway, email, "password-123")


def ask(gw, key):
    raw = gw.sdk(key).chat.completions.with_raw_response.create(model="test/fake-gpt", messages=MSG, temperature=0)
    return raw.headers["x-gateway-cache"]


def opened() -> list[str]:
    with db.session_scope() as s:
        value = s.scalar(select(GatewaySetting.value).where(GatewaySetting.key == "features")) or {}
    return value.get("allowed", [])


def test_superadmin_opens_layers_in_the_console_audited(gateway):
    console = admin(gateway)
    page = console.get("/admin/features")
    assert page.status_code == 200 and "Open to self-service" in page.text and 'href="/admin/features"' in page.text
    r = console.post("/admin/features", {"allowed": ["semantic_cache", "exact_cache"]}, htmx=True)
    assert r.status_code == 200 and "Saved." in r.text and r.headers["HX-Trigger"] == "features-changed"
    assert opened() == ["exact_cache", "semantic_cache"]  # in the layers' order
    assert features.allowed(gateway.org().id) == {"exact_cache", "semantic_cache"}
    page = console.get("/admin/features").text
    assert 'value="exact_cache" checked' in page and 'value="compression" checked' not in page
    with db.session_scope() as s:
        audit = s.scalars(select(AuditLog).where(AuditLog.action == "features.update")).all()
    assert len(audit) == 1 and "exact_cache, semantic_cache (was none)" in audit[0].detail
    # nothing ticked closes everything again
    assert console.post("/admin/features", {}).status_code == 200 and opened() == []


def test_the_features_page_needs_csrf(gateway):
    console = admin(gateway)
    r = console.http.post(gateway.url + "/admin/features", data={"allowed": "exact_cache"})
    assert r.status_code == 400 and opened() == []


@pytest.mark.parametrize("who", ["org-admin", "member"])
def test_org_admins_and_members_are_refused_the_settings_pages(gateway, who):
    console = org_console(gateway, "default") if who == "org-admin" else member_console(gateway, "default")
    for path in ("/admin/features", "/admin/ollama", "/admin/providers"):
        assert console.get(path).status_code == 403, path
    assert console.post("/admin/features", {"allowed": "exact_cache"}).status_code == 403
    assert console.post("/admin/ollama", {"base_url": "http://127.0.0.1:9"}).status_code == 403
    assert console.post("/admin/ollama/test", {"base_url": "http://127.0.0.1:9"}).status_code == 403
    assert opened() == []
    nav = console.get("/admin/agents").text if who == "org-admin" else ""
    assert 'href="/admin/features"' not in nav and 'href="/admin/ollama"' not in nav


@pytest.mark.parametrize("form, message", [
    ({"allowed": ["exact_cache", "no_such_layer"]}, "Unknown features: no_such_layer"),
    ({"allowed": ["x" * 100_000]}, "Unknown features"),
    ({"allowed": ["exact_cache"] * 50}, "Too many values"),
])
def test_bad_feature_lists_are_refused_and_write_nothing(gateway, form, message):
    console = admin(gateway)
    r = console.post("/admin/features", form)
    assert r.status_code == 422 and message in r.text and opened() == []


def test_an_org_switches_an_opened_layer_for_its_own_requests_only(gateway, fake_openai):
    """The exact cache is on by default: org A switches it off for itself; B still gets hits."""
    a, b = gateway.new_org("alpha"), gateway.new_org("beta")
    key_a, key_b = gateway.new_key("alpha"), gateway.new_key("beta")
    alpha_admin = Who("admin@alpha.example", org_id=a.id)

    with pytest.raises(AdminError, match="not open to self-service"):  # not opened yet
        features.set_opt_in(alpha_admin, a.id, "exact_cache", False)
    with db.write_lock, db.session_scope() as s:
        features.put_allowed(s, ROOT, ["exact_cache", "context_dedupe"])
    gateway.flush()
    assert features.state(a.id) == [{"layer": "exact_cache", "on": True, "chosen": None},
                                    {"layer": "context_dedupe", "on": False, "chosen": None}]
    features.set_opt_in(alpha_admin, a.id, "exact_cache", False)
    gateway.flush()
    assert features.choices(a.id) == {"exact_cache": False} and features.choices(b.id) == {}
    assert features.state(a.id)[0] == {"layer": "exact_cache", "on": False, "chosen": False}
    assert features.state(b.id)[0] == {"layer": "exact_cache", "on": True, "chosen": None}

    assert [ask(gateway, key_a), ask(gateway, key_a)] == ["miss", "miss"]  # off for alpha
    assert [ask(gateway, key_b), ask(gateway, key_b)] == ["miss", "hit"]  # beta untouched

    # another org's admin, a member, and a bad value are refused; nothing changes
    with pytest.raises(Forbidden):
        features.set_opt_in(Who("admin@beta.example", org_id=b.id), a.id, "exact_cache", True)
    with pytest.raises(Forbidden):
        features.set_opt_in(Who("member@alpha.example", org_id=a.id, role="member"), a.id, "exact_cache", True)
    for layer, on in (("no_such_layer", True), ("exact_cache", "yes"), ("exact_cache", 1), (None, True)):
        with pytest.raises(AdminError):
            features.set_opt_in(alpha_admin, a.id, layer, on)
    with pytest.raises(AdminError):
        features.set_opt_in(ROOT, 10_000, "exact_cache", True)  # no such org
    assert features.choices(a.id) == {"exact_cache": False}

    # withdrawn by the super-admin: alpha's choice is ignored from the next request (the cache is back)
    with db.write_lock, db.session_scope() as s:
        features.put_allowed(s, ROOT, ["context_dedupe"])
    gateway.flush()
    assert features.allowed(a.id) == {"context_dedupe"}
    assert [ask(gateway, key_a), ask(gateway, key_a)] == ["miss", "hit"]

    with db.session_scope() as s:
        rows = s.scalars(select(FeatureOptIn)).all()
        audit = s.scalars(select(AuditLog).where(AuditLog.action.like("feature.opt%"))).all()
    assert [(r.org_id, r.layer, r.enabled) for r in rows] == [(a.id, "exact_cache", False)]
    assert [(x.action, x.org_id, x.target) for x in audit] == [("feature.opt_out", a.id, "alpha:exact_cache")]
    # the super-admin's page lists it, marked as no longer in force
    page = admin(gateway).get("/admin/features").text
    row = page.split('data-org="alpha"')[1].split("</tr>")[0]
    assert "not open to self-service" in row


def test_a_plan_narrows_what_an_org_may_switch(gateway):
    from gateway.models import Org
    from gateway.services import plans

    org = gateway.new_org("planned")
    with db.write_lock, db.session_scope() as s:
        features.put_allowed(s, ROOT, ["exact_cache", "semantic_cache"])
        plan = plans.upsert(s, {"name": "small", "features": ["exact_cache"]}, actor="test")
        plans.set_org_plan(s, s.get(Org, org.id), plan, actor="test")
    gateway.flush()
    assert features.allowed(org.id) == {"exact_cache"}
    with pytest.raises(AdminError, match="not open"):
        features.set_opt_in(ROOT, org.id, "semantic_cache", True)
    features.set_opt_in(ROOT, org.id, "exact_cache", True)
    with db.session_scope() as s:
        assert s.scalar(select(func.count()).select_from(FeatureOptIn)) == 1


def test_org_admin_console_user_is_an_actor_for_its_own_org(gateway):
    """The dashboard passes the signed-in console user: an org-admin may switch its own org."""
    org_admin(gateway, "default", "boss@default.example")
    from gateway.admin.blueprint import LoginUser
    from gateway.models import User

    with db.write_lock, db.session_scope() as s:
        features.put_allowed(s, ROOT, ["compression"])
    with db.session_scope() as s:
        user = LoginUser(s.scalar(select(User).where(User.email == "boss@default.example")))
    features.set_opt_in(user, gateway.org().id, "compression", True)
    assert features.choices(gateway.org().id) == {"compression": True}
