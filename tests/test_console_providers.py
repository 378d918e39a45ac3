"""The Providers page and the model editor over real HTTP (signed in, with CSRF): a provider and its
routes added in the console serve the very next API request at the console's prices; keys are
stored encrypted and never shown; only super-admins may change any of it; bad input is explained
and writes nothing."""

import html
import itertools

import openai
import pytest
from sqlalchemy import func, select

from gateway import crypto, db, seed
from gateway.models import AuditLog, ChangeEvent, Model, Provider, Route
from tests.conftest import UPSTREAM_KEY
from tests.test_routing_console import admin, org_console

_turn = itertools.count()


def add_provider(console, name="acme", htmx=True, **fields):
    data = {"name": name, "kind": "openai", "base_url": console.fake_url, "api_key": UPSTREAM_KEY,
            "enabled": "on", "allow_private": "on", "responses_api": "auto", **fields}
    return console.post("/admin/providers", {k: v for k, v in data.items() if v is not None}, htmx=htmx)


def save_route(console, htmx=True, **fields):
    data = {"slug": "acme/chat", "provider": "acme", "upstream_model": "fake-gpt", "input_per_mtok": "1500",
            "output_per_mtok": "2500", "capabilities_mode": "all", "weight": "1", "reference": "on", **fields}
    return console.post("/admin/models/routes", {k: v for k, v in data.items() if v is not None}, htmx=htmx)


def superadmin(gateway, fake_openai):
    console = admin(gateway)
    console.fake_url = fake_openai.url
    return console


def chat(gateway, model):
    """One chat through the openai SDK (a new prompt each time, so no cache answers it):
    (reply text, its ledger row)."""
    messages = [{"role": "user", "content": f"hello number {next(_turn)}"}]
    raw = gateway.sdk().chat.completions.with_raw_response.create(model=model, messages=messages)
    row = gateway.rows(request_id=raw.headers["x-request-id"])[0]
    return raw.parse().choices[0].message.content, row


def priced(row, input_usd, output_usd) -> int:
    """What the ledger should charge for the row's tokens at these USD-per-Mtok prices."""
    total = row.input_tokens * input_usd * 1_000_000 + row.output_tokens * output_usd * 1_000_000
    return (total + 500_000) // 1_000_000


def provider(name):
    with db.session_scope() as s:
        return s.scalar(select(Provider).where(Provider.name == name))


def route_id(slug, upstream):
    with db.session_scope() as s:
        return s.scalar(select(Route.id).join(Model, Model.id == Route.model_id)
                        .where(Model.slug == slug, Route.upstream_model == upstream))


def listed(gateway) -> set[str]:
    """The slugs GET /v1/models lists."""
    return {m.id for m in gateway.sdk().models.list().data}


def counts():
    with db.session_scope() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in (Provider, Model, Route, AuditLog,
                                                                             ChangeEvent))


def test_a_provider_and_route_added_in_the_console_serve_the_next_request(gateway, fake_openai):
    console = superadmin(gateway, fake_openai)
    r = add_provider(console, add_defaults=None)
    assert r.status_code == 200 and r.headers["HX-Trigger"] == "providers-changed"
    assert "Added provider acme" in r.text and r.text.lstrip().startswith('<form id="provider-form"')
    r = save_route(console)
    assert r.status_code == 200 and r.headers["HX-Trigger"] == "catalog-changed"
    assert "Saved the route of acme/chat via acme/fake-gpt" in r.text
    gateway.flush()  # what the sync loop does within 50 ms here (a second in production)

    text, row = chat(gateway, "acme/chat")
    assert text == "Hello from fake fake-gpt."
    assert (row.provider, row.model, row.upstream_model) == ("acme", "acme/chat", "fake-gpt")
    assert row.input_tokens > 0 and row.output_tokens > 0
    assert row.charge_micros == priced(row, 1500, 2500) == row.benchmark_micros > 0
    assert fake_openai.requests[-1]["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"

    # the list shows it (key status, route count); the models page shows the route with its prices
    page = console.get("/admin/providers").text
    assert 'data-provider="acme"' in page and "set in console" in page and UPSTREAM_KEY[-4:] in page
    assert f"<code>{fake_openai.url}</code>" in page
    assert 'in config</span>' in page.split('data-provider="fake"')[1].split("</tr>")[0]  # GATEWAY_CONFIG's
    assert 'in config</span>' not in page.split('data-provider="acme"')[1].split("</tr>")[0]
    assert 'href="/admin/providers"' in console.get("/admin/models").text  # in a super-admin's nav
    models = console.get("/admin/models").text
    assert 'data-slug="acme/chat"' in models and "$1500.00" in models and "$2500.00" in models
    with db.session_scope() as s:
        audit = s.scalars(select(AuditLog).where(AuditLog.actor == gateway.admin_email)).all()
        actions = [(a.action, a.target) for a in audit]
    assert ("provider.create", "acme") in actions and ("route.create", "acme/chat") in actions


def test_the_key_is_stored_encrypted_and_never_shown(gateway, fake_openai):
    console = superadmin(gateway, fake_openai)
    add_provider(console, name="vault", add_defaults=None)
    p = provider("vault")
    assert p.console_key_enc and UPSTREAM_KEY.encode() not in p.console_key_enc and p.api_key_env is None
    # under the secret key, bound to the provider's name as a console key, so memo.py can decrypt it
    assert crypto.decrypt(crypto.derive_key("test-secret"), p.console_key_enc, aad=b"console:vault") == UPSTREAM_KEY
    assert p.console_key_hint == UPSTREAM_KEY[-4:] and p.api_key_enc is None
    pages = ["/admin/providers", f"/admin/providers/{p.id}/edit", "/admin/models", "/admin/audit", "/admin/load"]
    for path in pages:
        r = console.get(path)
        assert r.status_code == 200 and UPSTREAM_KEY not in r.text, path
    edit = console.get(f"/admin/providers/{p.id}/edit", htmx=True).text
    assert 'name="api_key" type="password" value=""' in edit and "blank keeps it" in edit
    with db.session_scope() as s:
        details = [f"{a.action} {a.target} {a.detail}" for a in s.scalars(select(AuditLog)).all()]
    assert any("provider.create vault" in d and "key set in console" in d for d in details)
    assert not any(UPSTREAM_KEY in d for d in details)


def test_blank_key_keeps_it_wrong_key_fails_disabling_stops_routing(gateway, fake_openai):
    console = superadmin(gateway, fake_openai)
    add_provider(console, add_defaults=None)
    save_route(console)
    pid = provider("acme").id
    stored = provider("acme").console_key_enc

    r = add_provider(console, provider_id=pid, api_key="", responses_api="no", batch_api="yes")  # key left blank
    assert r.status_code == 200 and "Saved provider acme" in r.text
    assert provider("acme").console_key_enc == stored and provider("acme").responses_api is False
    assert provider("acme").batch_api is True
    gateway.flush()
    assert chat(gateway, "acme/chat")[0] == "Hello from fake fake-gpt."

    add_provider(console, provider_id=pid, api_key="sk-wrong-key")
    gateway.flush()
    with pytest.raises(openai.APIStatusError) as e:
        chat(gateway, "acme/chat")
    assert e.value.status_code == 502  # the upstream answered 401: our key, not the client's fault
    assert fake_openai.requests[-1]["headers"]["authorization"] == "Bearer sk-wrong-key"
    with db.session_scope() as s:
        detail = s.scalar(select(AuditLog.detail).where(AuditLog.action == "provider.update")
                          .order_by(AuditLog.id.desc()))
    assert "key replaced" in detail and "sk-wrong-key" not in detail

    add_provider(console, provider_id=pid, api_key=UPSTREAM_KEY)
    gateway.flush()
    assert chat(gateway, "acme/chat")[0] == "Hello from fake fake-gpt."

    r = console.post(f"/admin/providers/{pid}/enabled", {"enabled": "off"}, htmx=True)
    assert r.status_code == 200 and "Disabled acme" in r.text and provider("acme").enabled is False
    assert r.text.lstrip().startswith('<tr class="notice-row">')  # the refreshed rows
    gateway.flush()
    with pytest.raises(openai.NotFoundError) as e:
        chat(gateway, "acme/chat")
    assert e.value.status_code == 404 and e.value.code == "model_not_found"
    assert "acme/chat" not in listed(gateway)
    models = console.get("/admin/models").text  # still editable, under "Not served now"
    assert 'id="unserved-models"' in models and f'data-route="{route_id("acme/chat", "fake-gpt")}"' in models

    console.post(f"/admin/providers/{pid}/enabled", {"enabled": "on"}, htmx=True)
    gateway.flush()
    assert chat(gateway, "acme/chat")[0] == "Hello from fake fake-gpt."
    with db.session_scope() as s:
        actions = s.scalars(select(AuditLog.action).where(AuditLog.target == "acme")).all()
    assert actions.count("provider.disable") == 1 and actions.count("provider.enable") == 1


def test_an_env_variable_key(gateway, fake_openai, monkeypatch):
    monkeypatch.setenv("ACME_TEST_KEY", UPSTREAM_KEY)
    monkeypatch.delenv("ACME_UNSET_KEY", raising=False)
    console = superadmin(gateway, fake_openai)
    add_provider(console, api_key=None, api_key_env="ACME_TEST_KEY", add_defaults=None)
    add_provider(console, name="other", api_key=None, api_key_env="$ACME_UNSET_KEY", add_defaults=None)
    assert provider("acme").api_key_enc is None and provider("acme").api_key_env == "ACME_TEST_KEY"
    save_route(console)
    gateway.flush()
    assert chat(gateway, "acme/chat")[0] == "Hello from fake fake-gpt."
    page = console.get("/admin/providers").text
    acme = page.split('data-provider="acme"')[1].split("</tr>")[0]
    other = page.split('data-provider="other"')[1].split("</tr>")[0]
    assert "$ACME_TEST_KEY" in acme and "(set in this process)" in acme
    assert "$ACME_UNSET_KEY" in other and "(not set in this process)" in other
    assert UPSTREAM_KEY not in page


def test_add_default_models_for_the_kind(gateway, fake_openai):
    console = superadmin(gateway, fake_openai)
    # an existing model keeps its own route (and price); the others come from the default catalog
    save_route(console, slug="openai/gpt-4o", provider="fake", upstream_model="fake-gpt", input_per_mtok="7",
               output_per_mtok="9")
    r = add_provider(console, name="openai-main", add_defaults="on")
    assert r.status_code == 200 and "Default models added:" in r.text and "openai/gpt-4o." in r.text

    catalog = seed.parse(seed.DEFAULT_CATALOG.read_text())
    openai_names = {p["name"] for p in catalog["providers"] if p["kind"] == "openai"}
    expected = {m["slug"]: m["routes"][0] for m in catalog["models"] if m["routes"][0]["provider"] in openai_names}
    assert "openai/gpt-4.1-mini" in expected and len(expected) >= 5
    with db.session_scope() as s:
        rows = s.execute(select(Model.slug, Provider.name, Route.upstream_model, Route.input_micros_per_mtok)
                         .join(Route, Route.model_id == Model.id).join(Provider, Provider.id == Route.provider_id)
                         ).all()
    by_slug = {slug: (prov, up, price) for slug, prov, up, price in rows}
    for slug, spec in expected.items():
        if slug == "openai/gpt-4o":
            assert by_slug[slug] == ("fake", "fake-gpt", 7_000_000)  # left as it was
        else:
            assert by_slug[slug] == ("openai-main", spec["upstream_model"], round(spec["input_per_mtok"] * 1e6))
    assert not any(slug.startswith("anthropic/") for slug in by_slug)  # other kinds are not imported
    gateway.flush()
    assert set(expected) <= listed(gateway)
    text, row = chat(gateway, "openai/gpt-4.1-mini")
    assert text == "Hello from fake gpt-4.1-mini." and row.provider == "openai-main"
    assert row.charge_micros == priced(row, 0.40, 1.60)
    with db.session_scope() as s:
        detail = s.scalar(select(AuditLog.detail).where(AuditLog.action == "provider.create"))
    assert "default models added: openai/gpt-4.1" in detail and "skipped (already routed): openai/gpt-4o" in detail


def test_price_edits_reference_route_and_deletes(gateway, fake_openai):
    console = superadmin(gateway, fake_openai)
    add_provider(console, add_defaults=None)
    save_route(console)
    gateway.flush()
    assert chat(gateway, "acme/chat")[1].charge_micros > 0

    rid = route_id("acme/chat", "fake-gpt")
    form = console.get(f"/admin/models/routes/{rid}/edit", htmx=True).text
    assert f'name="route_id" value="{rid}"' in form and 'value="1500"' in form
    r = save_route(console, route_id=str(rid), input_per_mtok="3000", output_per_mtok="5000.5")
    assert r.status_code == 200 and "Saved the route" in r.text
    gateway.flush()
    _, row = chat(gateway, "acme/chat")
    assert row.charge_micros == priced(row, 3000, 5000.5)
    with db.session_scope() as s:
        detail = s.scalar(select(AuditLog.detail).where(AuditLog.action == "route.update"))
    assert "in $3000.000000 out $5000.500000" in detail and "was acme/fake-gpt: in $1500.000000" in detail

    # a second route marked as the reference goes first (priority) and sets the benchmark price
    save_route(console, upstream_model="budget-gpt", input_per_mtok="10", output_per_mtok="20")
    gateway.flush()
    text, row = chat(gateway, "acme/chat")
    assert text == "Hello from fake budget-gpt." and row.benchmark_micros == priced(row, 10, 20)
    # un-marked, it moves behind the other route
    save_route(console, route_id=str(route_id("acme/chat", "budget-gpt")), upstream_model="budget-gpt",
               input_per_mtok="10", output_per_mtok="20", reference=None)
    gateway.flush()
    text, row = chat(gateway, "acme/chat")
    assert text == "Hello from fake fake-gpt." and row.benchmark_micros == priced(row, 3000, 5000.5)

    # deleting a model's last route removes the model, and says what still names it
    save_route(console, slug="acme/solo", upstream_model="fake-gpt")
    console.post("/admin/aliases", {"name": "solo", "scope": "global", "targets": "acme/solo"}, htmx=True)
    gateway.flush()
    assert "acme/solo" in listed(gateway)
    r = console.post(f"/admin/models/routes/{route_id('acme/solo', 'fake-gpt')}/delete", {}, htmx=True)
    assert r.status_code == 200 and r.headers["HX-Trigger"] == "catalog-changed"
    assert r.headers["HX-Retarget"] == "#route-form" and "Still naming it: alias solo." in r.text
    gateway.flush()
    assert "acme/solo" not in listed(gateway)
    with db.session_scope() as s:
        assert s.scalar(select(Model).where(Model.slug == "acme/solo")) is None
        detail = s.scalar(select(AuditLog.detail).where(AuditLog.action == "route.delete"))
    assert "model removed (no route left)" in detail

    # deleting the provider removes its routes and the models it alone served; shared models stay
    save_route(console, slug="test/cheap", upstream_model="fake-gpt")  # now the reference of test/cheap
    gateway.flush()
    assert chat(gateway, "test/cheap")[1].provider == "acme"
    r = console.post(f"/admin/providers/{provider('acme').id}/delete", {}, htmx=True)
    assert r.status_code == 200 and "Deleted provider acme" in r.text
    assert "Models removed (no route left): acme/chat." in r.text and 'data-provider="acme"' not in r.text
    gateway.flush()
    assert "acme/chat" not in listed(gateway) and "test/cheap" in listed(gateway)
    assert chat(gateway, "test/cheap")[1].provider == "fake"
    assert provider("acme") is None and route_id("acme/chat", "fake-gpt") is None
    with db.session_scope() as s:
        detail = s.scalar(select(AuditLog.detail).where(AuditLog.action == "provider.delete"))
    assert "3 routes removed" in detail and "models removed (no route left): acme/chat" in detail


def test_an_org_admin_cannot_change_providers_or_routes(gateway, fake_openai):
    console = superadmin(gateway, fake_openai)
    add_provider(console, add_defaults=None)
    save_route(console)
    pid, rid = provider("acme").id, route_id("acme/chat", "fake-gpt")
    gateway.new_org("alpha")
    org = org_console(gateway, "alpha")
    org.fake_url = fake_openai.url
    before = counts()

    assert org.get("/admin/providers").status_code == 403
    assert org.get(f"/admin/providers/{pid}/edit").status_code == 403
    assert add_provider(org, name="mine").status_code == 403
    assert add_provider(org, provider_id=pid, api_key="sk-stolen").status_code == 403
    assert org.post(f"/admin/providers/{pid}/enabled", {"enabled": "off"}).status_code == 403
    assert org.post(f"/admin/providers/{pid}/delete", {}).status_code == 403
    assert save_route(org, slug="alpha/model").status_code == 403
    assert save_route(org, route_id=str(rid), input_per_mtok="0").status_code == 403
    assert org.get(f"/admin/models/routes/{rid}/edit").status_code == 403
    assert org.post(f"/admin/models/routes/{rid}/delete", {}).status_code == 403
    assert counts() == before and provider("acme").enabled and provider("acme").console_key_enc
    gateway.flush()
    assert chat(gateway, "acme/chat")[1].charge_micros > 0  # untouched

    page = org.get("/admin/models")  # the read-only catalog
    assert page.status_code == 200 and 'data-slug="acme/chat"' in page.text
    assert 'id="route-form"' not in page.text and 'href="/admin/providers"' not in page.text
    assert "Delete" not in page.text and UPSTREAM_KEY not in page.text


BAD_PROVIDERS = [
    ({"base_url": "ftp://example.com/v1"}, "is not an http(s) URL"),
    ({"base_url": "not a url"}, "is not an http(s) URL"),
    ({"base_url": "https://user:pw@example.com/v1"}, "not in the base URL"),
    ({"kind": "carrier-pigeon"}, "Unknown kind 'carrier-pigeon'"),
    ({"name": "fake"}, "A provider named 'fake' already exists"),
    ({"name": "has space"}, "Provider name 'has space' is not valid"),
    ({"api_key_env": "OPENAI_API_KEY"}, "not both"),
    ({"api_key": None, "api_key_env": "GATEWAY_SECRET_KEY"}, "one of the gateway's own settings"),
    ({"responses_api": "maybe"}, "Responses API must be auto, yes or no"),
    ({"batch_api": "sometimes"}, "Batch API must be auto, yes or no"),
]


@pytest.mark.parametrize(("fields", "message"), BAD_PROVIDERS)
def test_bad_provider_input_is_explained_and_writes_nothing(gateway, fake_openai, fields, message):
    console = superadmin(gateway, fake_openai)
    before = counts()
    r = add_provider(console, add_defaults="on", **fields)
    assert r.status_code == 200 and message in html.unescape(r.text) and 'class="error"' in r.text
    assert "HX-Trigger" not in r.headers
    plain = add_provider(console, htmx=False, add_defaults="on", **fields)
    assert plain.status_code == 422 and message in html.unescape(plain.text) and "<h1>Providers</h1>" in plain.text
    assert counts() == before
    assert UPSTREAM_KEY not in r.text + plain.text  # a typed key is not rendered back, even then
    if fields.get("api_key", UPSTREAM_KEY):
        assert "The API key was not saved: enter it again." in r.text


BAD_ROUTES = [
    ({"input_per_mtok": "-1"}, "Input price must be 0 or more"),
    ({"output_per_mtok": "lots"}, "Output price: 'lots' is not a number"),
    ({"cached_input_per_mtok": "-0.5"}, "Cached input price must be 0 or more"),
    ({"provider": "nobody"}, "Choose a provider"),
    ({"slug": "bad slug"}, "Model slug 'bad slug' is not valid"),
    ({"slug": "fast"}, "'fast' is an alias name"),
    ({"upstream_model": ""}, "Enter the upstream model"),
    ({"context_window": "-5"}, "Context window must be a whole number"),
    ({"capabilities_mode": "declared", "capabilities": "teleport"}, "Unknown capability 'teleport'"),
    ({"slug": "test/cheap", "provider": "fake"}, "test/cheap already has a route to fake/fake-gpt"),
]


@pytest.mark.parametrize(("fields", "message"), BAD_ROUTES)
def test_bad_route_input_is_explained_and_writes_nothing(gateway, fake_openai, fields, message):
    console = superadmin(gateway, fake_openai)
    before = counts()
    r = save_route(console, **{"provider": "fake", **fields})
    assert r.status_code == 200 and message in html.unescape(r.text) and 'class="error"' in r.text
    assert "HX-Trigger" not in r.headers
    assert save_route(console, htmx=False, **{"provider": "fake", **fields}).status_code == 422
    assert counts() == before


def test_declared_capabilities_are_stored_and_route_requests(gateway, fake_openai):
    console = superadmin(gateway, fake_openai)
    r = console.post("/admin/models/routes", {
        "slug": "test/plain", "provider": "fake", "upstream_model": "fake-gpt", "input_per_mtok": "1",
        "output_per_mtok": "2", "capabilities_mode": "declared", "capabilities": ["streaming", "json_mode"],
        "context_window": "32,000", "max_output_tokens": "4096"}, htmx=True)
    assert "Saved the route" in r.text
    with db.session_scope() as s:
        route = s.get(Route, route_id("test/plain", "fake-gpt"))
        model = s.scalar(select(Model).where(Model.slug == "test/plain"))
        assert (route.capabilities, route.position, model.context_window, model.max_output_tokens) == (
            "streaming,json_mode", 0, 32000, 4096)
    gateway.flush()
    assert chat(gateway, "test/plain")[0] == "Hello from fake fake-gpt."
    with pytest.raises(openai.BadRequestError) as e:  # no route of it declares tools
        gateway.sdk().chat.completions.create(model="test/plain", messages=[{"role": "user", "content": "x"}],
                                              tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert "tools" in e.value.message


def test_fixing_a_key_closes_the_breaker_its_failures_opened(gateway, fake_openai):
    """Five 502s from a wrong key open the route's breaker; saving the right key must not leave the
    model failing until the cooldown ends."""
    from gateway.routing.health import HEALTH, OPEN

    console = superadmin(gateway, fake_openai)
    add_provider(console, add_defaults=None)
    save_route(console)
    pid = provider("acme").id
    add_provider(console, provider_id=pid, api_key="sk-wrong-key")
    gateway.flush()
    rid = route_id("acme/chat", "fake-gpt")
    for _ in range(HEALTH.failures + 1):
        with pytest.raises(openai.APIStatusError):
            chat(gateway, "acme/chat")
    assert HEALTH.state(rid) == OPEN
    add_provider(console, provider_id=pid, api_key=UPSTREAM_KEY)
    gateway.flush()
    assert chat(gateway, "acme/chat")[0] == "Hello from fake fake-gpt."
