"""The routing console over real HTTP: every edit (with CSRF) changes routing on the very next API request,
is audited, and stays within the editor's rights; bad input is explained in the form."""

import openai
import pytest
import requests
import yaml
from sqlalchemy import select

from gateway import db, seed
from gateway.memo import MEMO
from gateway.models import AccessPolicy, Alias, ApiKey, Fallback
from tests.conftest import UPSTREAM_KEY
from tests.test_console import csrf_of, login, org_admin

MSG = [{"role": "user", "content": "hi"}]
PAGES = {
    "/admin/models": "Available Models", "/admin/aliases": "Model Router",
    "/admin/fallbacks": "Fallback Chains", "/admin/agents": "Agent Configurations",
    "/admin/strategy": "Routing Strategy", "/admin/access": "Access Rules",
    "/admin/load": "Provider Load &amp; Routing", "/admin/audit": "Audit log",
}
STRATEGY_FORM = {"strategy": "cheapest", "retries": "0", "backoff_base_ms": "100", "backoff_max_ms": "2000",
                 "deadline_seconds": "30", "breaker_failures": "3", "breaker_cooldown_seconds": "10"}
TWO_ROUTES = f"""
providers:
  - {{name: fake, kind: openai, base_url: UPSTREAM, api_key: {UPSTREAM_KEY}, allow_private: true}}
models:
  - slug: test/two-route
    routes:
      - {{provider: fake, upstream_model: premium-gpt, input_per_mtok: 10, output_per_mtok: 30}}
      - {{provider: fake, upstream_model: budget-gpt, input_per_mtok: 1, output_per_mtok: 2}}
"""


class Console:
    """A signed-in console session that posts forms with their CSRF token."""

    def __init__(self, gateway, email: str, password: str) -> None:
        self.url = gateway.url
        self.http, page = login(gateway, email, password)
        assert page.status_code == 200, page.text
        self.token = csrf_of(page.text)

    def get(self, path: str, htmx: bool = False, **kw) -> requests.Response:
        return self.http.get(self.url + path, headers={"HX-Request": "true"} if htmx else {}, **kw)

    def post(self, path: str, data: dict, htmx: bool = False) -> requests.Response:
        return self.http.post(self.url + path, data={**data, "csrf_token": self.token},
                              headers={"HX-Request": "true"} if htmx else {}, allow_redirects=False)

    def status(self, path: str, **data) -> int:
        return self.post(path, data).status_code


def admin(gateway) -> Console:
    return Console(gateway, gateway.admin_email, gateway.admin_password)


def org_console(gateway, org: str) -> Console:
    email = f"admin@{org}.example"
    org_admin(gateway, org, email)
    return Console(gateway, email, "password-123")


def served_model(gateway, key: str, model: str) -> str:
    """The catalog slug that served a request for `model`, from its ledger row."""
    raw = gateway.sdk(key).chat.completions.with_raw_response.create(model=model, messages=MSG)
    return gateway.rows(request_id=raw.headers["x-request-id"])[0].model


def add_config(gateway, text: str) -> None:
    upstream = yaml.safe_load(gateway.config_path.read_text())["providers"][0]["base_url"]
    with db.write_lock, db.session_scope() as s:
        seed.apply(s, seed.parse(text.replace("UPSTREAM", upstream)), "test-secret")
    gateway.flush()


def row_id(model, *where) -> int:
    with db.session_scope() as s:
        return s.scalar(select(model.id).where(*where))


def test_every_page_renders_for_a_superadmin(gateway):
    console = admin(gateway)
    for path, title in PAGES.items():
        r = console.get(path)
        assert r.status_code == 200, path
        assert f"<h1>{title}</h1>" in r.text and 'name="csrf_token"' in r.text
        assert f'href="{path}"' in r.text  # in the nav
    models = console.get("/admin/models").text
    assert 'data-slug="test/fake-gpt"' in models and "$1000.00" in models
    assert "fake/<code>fake-gpt</code>" in models  # the reference route
    assert 'data-alias="fast"' in console.get("/admin/aliases").text
    assert 'data-model="test/error-500"' in console.get("/admin/fallbacks").text
    # the same views answer htmx with their table rows only
    part = console.get("/admin/aliases", htmx=True)
    assert part.text.lstrip().startswith("<tr") and "HX-Request" in part.headers["Vary"]


def test_forms_need_the_csrf_token(gateway):
    console = admin(gateway)
    data = {"scope": "global", "name": "x", "targets": "test/cheap"}
    assert console.http.post(gateway.url + "/admin/aliases", data=data).status_code == 400
    gateway.flush()
    assert MEMO.catalog.alias("x") is None


def test_an_org_alias_routes_that_orgs_next_request_only(gateway):
    gateway.new_org("alpha")
    gateway.new_org("bravo")
    alpha_key, bravo_key = gateway.new_key("alpha"), gateway.new_key("bravo")
    assert served_model(gateway, alpha_key, "fast") == "test/fake-gpt"  # the global alias

    console = org_console(gateway, "alpha")
    alias = {"scope": gateway.org("alpha").id, "name": "fast", "targets": "test/cheap"}
    r = console.post("/admin/aliases", alias, htmx=True)
    assert r.status_code == 200 and r.headers["HX-Trigger"] == "aliases-changed"
    assert "Saved alias fast" in r.text and r.text.lstrip().startswith('<form id="alias-form"')
    gateway.flush()  # what the sync loop does within 50 ms here (a second in production)

    assert served_model(gateway, alpha_key, "fast") == "test/cheap"
    assert served_model(gateway, bravo_key, "fast") == "test/fake-gpt"
    rows = console.get("/admin/aliases").text
    assert 'data-alias="fast" data-scope="alpha"' in rows and 'data-alias="fast" data-scope="global"' in rows

    audit = console.get("/admin/audit").text
    assert "admin@alpha.example" in audit and "alias.create" in audit and "org alpha: test/cheap" in audit


def test_a_strategy_alias_over_several_models(gateway):
    add_config(gateway, TWO_ROUTES)
    console = admin(gateway)
    r = console.post("/admin/aliases", {"scope": "global", "name": "thrifty", "strategy": "cheapest",
                                        "targets": "test/cheap, test/two-route"})
    assert r.status_code == 200 and "Saved alias thrifty" in r.text  # a plain post: the whole page,
    assert 'data-alias="thrifty" data-scope="global"' in r.text  # with the new row in its table
    gateway.flush()
    # listed second, but its reference route ($10 + $30 per Mtok) is cheaper than test/cheap's ($100 + $200)
    assert served_model(gateway, gateway.api_key, "thrifty") == "test/two-route"


def test_changing_the_strategy_to_cheapest_picks_the_cheaper_route(gateway):
    add_config(gateway, TWO_ROUTES)
    sdk = gateway.sdk()
    reply = sdk.chat.completions.create(model="test/two-route", messages=MSG)
    assert reply.choices[0].message.content == "Hello from fake premium-gpt."  # priority: catalog order

    console = admin(gateway)
    page = console.get("/admin/strategy").text
    assert 'value="priority" checked' in page and 'name="retries" value="0"' in page
    r = console.post("/admin/strategy", STRATEGY_FORM, htmx=True)
    assert r.status_code == 200 and r.headers["HX-Trigger"] == "routing-changed"
    assert "strategy cheapest" in r.text
    gateway.flush()

    reply = sdk.chat.completions.create(model="test/two-route", messages=MSG)
    assert reply.choices[0].message.content == "Hello from fake budget-gpt."
    assert MEMO.policy.settings["routing"]["breaker_failures"] == 3
    assert "strategy: priority -&gt; cheapest" in console.get("/admin/audit").text


def test_non_superadmins_cannot_change_strategy_or_global_rows(gateway):
    gateway.new_org("alpha")
    console = org_console(gateway, "alpha")
    alpha_id, default_id = gateway.org("alpha").id, gateway.org("default").id
    for path, title in PAGES.items():  # every other page is theirs to read
        if path != "/admin/strategy":
            assert f"<h1>{title}</h1>" in console.get(path).text, path
    assert console.get("/admin/strategy").status_code == 403
    assert console.status("/admin/strategy", **STRATEGY_FORM) == 403
    assert 'href="/admin/strategy"' not in console.get("/admin/aliases").text  # not in their nav either
    assert console.status("/admin/aliases", scope="global", name="fast", targets="test/cheap") == 403
    assert console.status("/admin/aliases", scope=default_id, name="fast", targets="test/cheap") == 403
    assert console.status("/admin/fallbacks", model="*", chain="test/cheap") == 403
    assert console.status("/admin/agents", scope="global", name="a", normal="test/cheap") == 403
    assert console.status("/admin/access", target=f"org:{alpha_id}", allowed_models="test/cheap") == 403
    gateway.flush()
    assert MEMO.catalog.alias("fast").target == "test/fake-gpt"
    assert MEMO.policy.settings["routing"].get("strategy", "priority") == "priority"
    assert "*" not in MEMO.catalog.fallbacks and not MEMO.policy.agents and not MEMO.policy.access
    # the global alias is shown read-only: no edit link for it
    rows = console.get("/admin/aliases", htmx=True).text
    assert 'data-scope="global"' in rows and "/edit" not in rows


def test_org_admins_never_see_other_orgs_aliases_agents_rules_or_audit(gateway):
    gateway.new_org("alpha")
    gateway.new_org("bravo")
    gateway.new_key("bravo", name="bravo-key")
    bravo_id = gateway.org("bravo").id
    root = admin(gateway)
    assert root.status("/admin/aliases", scope=bravo_id, name="bravo-secret", targets="test/cheap") == 200
    assert root.status("/admin/agents", scope=bravo_id, name="bravo-agent", normal="test/cheap") == 200
    assert root.status("/admin/access", target=f"org:{bravo_id}", allowed_models="test/cheap") == 200
    alias_id = row_id(Alias, Alias.name == "bravo-secret")

    alpha = org_console(gateway, "alpha")
    for path in ("/admin/aliases", "/admin/agents", "/admin/access", "/admin/audit"):
        assert "bravo" not in alpha.get(path).text, path
    assert alpha.get(f"/admin/aliases/{alias_id}/edit").status_code == 404
    assert alpha.post(f"/admin/aliases/{alias_id}/delete", {}).status_code == 403
    assert alpha.get("/admin/agents/export", params={"scope": bravo_id}).status_code == 404
    # the super-admin sees all of it, and the audit trail of each change
    assert "bravo-secret" in root.get("/admin/aliases").text
    audit = root.get("/admin/audit").text
    assert "bravo-secret" in audit and "bravo-agent" in audit and "access.create" in audit


@pytest.mark.parametrize("path, data, message", [
    ("/admin/aliases", {"scope": "global", "name": "typo", "targets": "test/nope"},
     "Unknown model &#39;test/nope&#39;: pick a slug from Available Models."),
    ("/admin/aliases", {"scope": "global", "name": "two", "targets": "test/cheap test/fake-gpt"},
     "An alias over several models needs a strategy to choose between them."),
    ("/admin/aliases", {"scope": "global", "name": "has space", "targets": "test/cheap"},
     "Alias name &#39;has space&#39; is not valid"),
    ("/admin/aliases", {"scope": "global", "name": "test/cheap", "targets": "test/fake-gpt"},
     "&#39;test/cheap&#39; is a model slug; an alias needs a name of its own."),
    ("/admin/fallbacks", {"model": "test/cheap", "chain": "test/cheap"}, "cannot fall back to itself"),
    ("/admin/strategy", {"strategy": "cheapest", "retries": "-1"},
     "Retries per route must be between 0 and 10."),
    ("/admin/strategy", {"strategy": "random"}, "Unknown strategy &#39;random&#39;"),
    ("/admin/access", {"target": "org:1", "max_input": "cheap"},
     "Max input price: &#39;cheap&#39; is not a number"),
    ("/admin/access", {"target": "org:1"}, "This rule sets no limit"),
    ("/admin/agents", {"scope": "global", "name": "a", "normal": "test/nope"},
     "normal: unknown model or alias &#39;test/nope&#39;."),
])
def test_bad_input_is_explained_in_the_form(gateway, path, data, message):
    console = admin(gateway)
    r = console.post(path, data)  # a plain form post: the whole page, 422
    assert r.status_code == 422 and message in r.text and "<h1>" in r.text
    part = console.post(path, data, htmx=True)  # htmx: the form alone, 200 so that htmx swaps it in
    assert part.status_code == 200 and message in part.text and "<h1>" not in part.text
    assert "HX-Trigger" not in part.headers


def test_agents_yaml_export_import_round_trip_and_routing(gateway):
    gateway.new_org("alpha")
    alpha_id = gateway.org("alpha").id
    alpha_key = gateway.new_key("alpha")
    console = admin(gateway)
    coder = {"name": "coder", "normal": "test/cheap", "heavy": "test/fake-gpt", "max": "fast"}
    assert console.status("/admin/agents", scope="global", **coder) == 200
    assert console.status("/admin/agents", scope="global", name="writer", normal="fast") == 200
    gateway.flush()
    assert served_model(gateway, gateway.api_key, "agent:coder") == "test/cheap"
    assert served_model(gateway, gateway.api_key, "agent:coder:heavy") == "test/fake-gpt"

    r = console.get("/admin/agents/export", params={"scope": "global"})
    assert r.status_code == 200
    assert r.headers["Content-Disposition"] == 'attachment; filename="agents-global.yaml"'
    exported = yaml.safe_load(r.text)
    assert exported == {"agents": [coder, {"name": "writer", "normal": "fast"}]}
    assert seed.parse(r.text)["agents"] == exported["agents"]  # an export is valid config too

    # import into org alpha, with the org's own heavy model for coder
    text = r.text.replace("heavy: test/fake-gpt", "heavy: test/cheap")
    imp = console.post("/admin/agents/import", {"scope": alpha_id, "yaml": text}, htmx=True)
    assert imp.status_code == 200 and "Imported 2 agents: coder, writer." in imp.text
    assert imp.headers["HX-Trigger"] == "agents-changed"
    gateway.flush()
    assert served_model(gateway, alpha_key, "agent:coder:heavy") == "test/cheap"  # the org's agent wins
    assert served_model(gateway, gateway.api_key, "agent:coder:heavy") == "test/fake-gpt"
    again = yaml.safe_load(console.get("/admin/agents/export", params={"scope": alpha_id}).text)
    assert again == {"agents": [{**coder, "heavy": "test/cheap"}, {"name": "writer", "normal": "fast"}]}


@pytest.mark.parametrize("text, message", [
    ("agents: [", "Invalid YAML"),
    ("agents:\n- name: a\n  nromal: test/cheap\n", "YAML, line 3: unknown key &#39;nromal&#39; in agents[0]"),
    ("agents:\n- name: a\n", "YAML, line 2: &#39;agents[0]&#39; is missing required key &#39;normal&#39;"),
    ("agents:\n- {name: a, normal: test/cheap}\n- {name: b, normal: test/nope}\n",
     "agents[1] (b): normal: unknown model or alias &#39;test/nope&#39;."),
    ("agents:\n- {name: a, normal: test/cheap}\n- {name: a, normal: test/cheap}\n",
     "agents[1] (a): the name appears twice."),
])
def test_agent_import_errors_are_clear_and_write_nothing(gateway, text, message):
    console = admin(gateway)
    r = console.post("/admin/agents/import", {"scope": "global", "yaml": text})
    assert r.status_code == 422 and message in r.text
    gateway.flush()
    assert not MEMO.policy.agents


def test_access_rules_deny_through_the_api_with_the_documented_403(gateway):
    console = admin(gateway)
    default_id = gateway.org("default").id
    rule = {"target": f"org:{default_id}", "allowed_models": "test/cheap test/fake-gpt"}
    r = console.post("/admin/access", rule)
    assert r.status_code == 200 and "Saved the access rule" in r.text
    gateway.flush()
    sdk = gateway.sdk()
    with pytest.raises(openai.PermissionDeniedError) as e:
        sdk.chat.completions.create(model="test/error-500", messages=MSG)
    assert e.value.status_code == 403 and e.value.body["type"] == "permission_error"
    assert e.value.body["message"] == "The model `test/error-500` is not allowed by this org's access policy."
    assert sdk.chat.completions.create(model="test/cheap", messages=MSG).choices[0].message.content

    # an org admin narrows it for one key with a price cap (USD per Mtok): test/fake-gpt costs $1000 in
    key = gateway.new_key("default", name="capped")
    org = org_console(gateway, "default")
    key_id = row_id(ApiKey, ApiKey.name == "capped")
    r = org.post("/admin/access", {"target": f"key:{key_id}", "max_input": "500"})
    assert r.status_code == 200, r.text
    gateway.flush()
    with pytest.raises(openai.PermissionDeniedError) as e:
        gateway.sdk(key).chat.completions.create(model="fast", messages=MSG)
    assert e.value.body["message"] == ("No route for `fast` is allowed: fake/fake-gpt costs more per"
                                       " input Mtok than the key's price cap.")
    assert gateway.sdk(key).chat.completions.create(model="test/cheap", messages=MSG).choices
    table = org.get("/admin/access", htmx=True).text
    assert "org default, key " in table and "$500.00" in table

    # deleting the org-wide rule lifts it on the next request
    rule_id = row_id(AccessPolicy, AccessPolicy.key_id.is_(None))
    deleted = console.post(f"/admin/access/{rule_id}/delete", {}, htmx=True)
    assert deleted.headers["HX-Trigger"] == "access-changed"
    gateway.flush()
    assert sdk.chat.completions.create(model="test/echo", messages=MSG).choices  # not in the deleted list


def test_fallback_chain_edits_take_effect_on_the_next_request(gateway):
    sdk = gateway.sdk()
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(model="test/error-503", messages=MSG)
    console = admin(gateway)
    r = console.post("/admin/fallbacks", {"model": "test/error-503", "chain": "test/cheap"}, htmx=True)
    assert r.headers["HX-Trigger"] == "fallbacks-changed" and "Saved the chain of test/error-503" in r.text
    gateway.flush()
    raw = sdk.chat.completions.with_raw_response.create(model="test/error-503", messages=MSG)
    row = gateway.rows(request_id=raw.headers["x-request-id"])[0]
    assert (row.model, row.upstream_model) == ("test/error-503", "fake-gpt")  # served by test/cheap's route

    assert 'data-model="test/error-503"' in console.get("/admin/fallbacks").text
    fb_id = row_id(Fallback, Fallback.model_slug == "test/error-503")
    deleted = console.post(f"/admin/fallbacks/{fb_id}/delete", {}, htmx=True)
    assert deleted.status_code == 200 and deleted.text == ""
    gateway.flush()
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(model="test/error-503", messages=MSG)
    assert "fallback.delete" in console.get("/admin/audit").text


def test_provider_load_page_shows_live_route_health(gateway):
    sdk = gateway.sdk()
    sdk.chat.completions.create(model="test/fake-gpt", messages=MSG)
    sdk.chat.completions.create(model="test/fake-gpt", messages=MSG)
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(model="test/error-503", messages=MSG)
    page = admin(gateway).get("/admin/load", htmx=True).text
    ok = _route_row(page, "test/fake-gpt")
    assert '<td class="num requests">2</td>' in ok and '<td class="num errors">0</td>' in ok
    assert '<span class="breaker closed">closed</span>' in ok
    bad = _route_row(page, "test/error-503")
    assert '<td class="num requests">1</td>' in bad and '<td class="num errors">1</td>' in bad


def _route_row(html: str, slug: str) -> str:
    start = html.index(f'data-route="{MEMO.catalog.models[slug].routes[0].id}"')
    return html[start:html.index("</tr>", start)]
