"""Plans and rate limits: token buckets per org and per key with OpenAI's and Anthropic's headers,
key quotas, plans from the config, the CLI and the console."""

import anthropic
import openai
import pytest
import yaml

from gateway import db, seed
from gateway.services import plans, tenancy
from tests.test_routing_console import admin

MSG = [{"role": "user", "content": "hello there"}]


def put_plan(gw, org: str, **spec) -> None:
    with db.write_lock, db.session_scope() as s:
        plan = plans.upsert(s, {"name": spec.pop("name", "test"), **spec})
        plans.set_org_plan(s, tenancy.org_by_name(s, org), plan)
    gw.flush()


def chat(gw, key=None, **kw):
    body = {"model": "test/cheap", "messages": MSG, "max_tokens": 1, **kw}
    return gw.post("/v1/chat/completions", body, key=key)


def test_org_without_a_plan_has_no_limit_headers(gateway):
    r = chat(gateway)
    assert r.status_code == 200 and not any(h.startswith("x-ratelimit") for h in r.headers)


def test_org_rpm_answers_429_with_openai_headers_and_retry_after(gateway):
    put_plan(gateway, "default", rpm=2)
    first = chat(gateway)
    assert first.status_code == 200
    assert (first.headers["x-ratelimit-limit-requests"], first.headers["x-ratelimit-remaining-requests"]) == ("2", "1")
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    assert chat(gateway).headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as e:
        gateway.sdk().chat.completions.create(model="test/cheap", messages=MSG, max_tokens=1)
    resp = e.value.response
    assert e.value.code == "rate_limit_exceeded" and "2 requests per minute" in e.value.message
    assert int(resp.headers["retry-after"]) >= 1
    assert resp.headers["x-ratelimit-limit-requests"] == "2" and resp.headers["x-ratelimit-remaining-requests"] == "0"
    # another org is not limited by this one's plan
    gateway.new_org("rival", usd=5)
    assert chat(gateway, gateway.new_key("rival")).status_code == 200


def test_tokens_per_minute_counts_the_prompt_and_the_output_cap(gateway):
    put_plan(gateway, "default", tpm=100)
    ok = chat(gateway)
    assert ok.status_code == 200 and ok.headers["x-ratelimit-limit-tokens"] == "100"
    assert int(ok.headers["x-ratelimit-remaining-tokens"]) < 100
    big = chat(gateway, messages=[{"role": "user", "content": "word " * 200}])
    assert big.status_code == 429 and big.json()["error"]["type"] == "rate_limit_error"
    assert "tokens per minute" in big.json()["error"]["message"]
    assert big.headers["x-ratelimit-limit-tokens"] == "100" and "retry-after" in big.headers


def test_key_limits_are_per_key(gateway):
    put_plan(gateway, "default", key_rpm=1)
    other = gateway.new_key("default")
    assert chat(gateway).status_code == 200
    assert chat(gateway).status_code == 429
    assert chat(gateway, other).status_code == 200  # its own bucket


def test_anthropic_route_gets_anthropic_ratelimit_headers(gateway_factory, fake_anthropic):
    gw = gateway_factory()
    put_plan(gw, "default", rpm=1, tpm=100_000)
    client = anthropic.Anthropic(base_url=gw.url, api_key=gw.api_key, max_retries=0)
    raw = client.messages.with_raw_response.create(model="anthropic-test/claude-fake", max_tokens=5, messages=MSG)
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert raw.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert raw.headers["anthropic-ratelimit-tokens-limit"] == "100000"
    assert not any(h.startswith("x-ratelimit") for h in raw.headers)
    with pytest.raises(anthropic.RateLimitError) as e:
        client.messages.create(model="anthropic-test/claude-fake", max_tokens=5, messages=MSG)
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "rate_limit_error"
    assert int(e.value.response.headers["retry-after"]) >= 1
    assert e.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"


def test_key_creation_beyond_max_keys_is_refused(gateway):
    gateway.new_org("acme", usd=5)
    gateway.new_key("acme")
    put_plan(gateway, "acme", max_keys=2)
    gateway.cli("key", "create", "--org", "acme")
    refused = gateway.cli("key", "create", "--org", "acme", check=False)
    assert refused.returncode == 1 and "the most its plan 'test' allows (2)" in refused.stderr


def test_plans_from_config_and_org_cli(gateway):
    config = yaml.safe_load(gateway.config_path.read_text())
    config["plans"] = [{"name": "starter", "rpm": 60, "tpm": 200000, "max_keys": 10, "batch": True,
                        "monthly_usd": 49},
                       {"name": "lite", "rpm": 1, "features": ["exact_cache"]}]
    gateway.config_path.write_text(yaml.safe_dump(config))
    with db.write_lock, db.session_scope() as s:
        seed.apply(s, seed.load_file(gateway.config_path), "test-secret")
    assert gateway.cli("plan", "list").stdout.splitlines() == ["lite\t1\t-\t-\t-\t-",
                                                               "starter\t60\t200000\t-\t-\t10"]
    out = gateway.cli("org", "create", "acme", "--credits", "5", "--plan", "lite").stdout
    assert "on plan lite" in out
    key = gateway.cli("key", "create", "--org", "acme").stdout.strip()
    gateway.flush()
    assert chat(gateway, key).status_code == 200
    assert chat(gateway, key).status_code == 429
    gateway.cli("org", "plan", "--org", "acme", "--plan", "none")
    gateway.flush()
    assert chat(gateway, key).status_code == 200
    bad = gateway.cli("org", "plan", "--org", "acme", "--plan", "gold", check=False)
    assert bad.returncode == 1 and "no plan named 'gold'" in bad.stderr
    with pytest.raises(seed.ConfigError, match="unknown features"):
        seed.parse("plans:\n  - {name: x, features: [teleport]}\n")
    with pytest.raises(seed.ConfigError, match="must be a positive integer"):
        seed.parse("plans:\n  - {name: x, rpm: -1}\n")


def test_console_plans_page_presets_and_assignment(gateway):
    console = admin(gateway)
    assert console.get("/admin/plans").status_code == 200
    r = console.post("/admin/plans", {"preset": "starter"}, htmx=True)
    assert r.status_code == 200 and "Saved plan starter" in r.text
    r = console.post("/admin/plans", {"name": "tiny", "rpm": "1", "batch": "on"}, htmx=True)
    assert "Saved plan tiny" in r.text
    r = console.post("/admin/plans", {"name": "bad", "rpm": "-3"}, htmx=True)
    assert "must be above 0" in r.text
    orgs = {o.name: o.id for o in [gateway.org()]}
    r = console.post("/admin/plans/assign", {"org": str(orgs["default"]), "plan": "tiny"}, htmx=True)
    assert "is now on tiny" in r.text
    gateway.flush()
    assert chat(gateway).status_code == 200 and chat(gateway).status_code == 429
    page = console.get("/admin/plans").text
    assert 'data-plan="starter"' in page and 'data-plan="tiny"' in page


def test_console_refund_and_adjust_are_super_admin_only(gateway):
    from tests.test_routing_console import org_console

    console = admin(gateway)
    org_id = gateway.org().id
    before = gateway.org().credits_micros
    r = console.post("/admin/orgs/adjust", {"org": str(org_id), "kind": "refund", "amount": "2",
                                            "reason": "outage"}, htmx=True)
    assert "Recorded" in r.text
    r = console.post("/admin/orgs/adjust", {"org": str(org_id), "kind": "adjustment", "amount": "-0.5",
                                            "reason": "typo"}, htmx=True)
    assert "Recorded" in r.text
    r = console.post("/admin/orgs/adjust", {"org": str(org_id), "kind": "refund", "amount": "1",
                                            "reason": ""}, htmx=True)
    assert "needs a reason" in r.text
    assert gateway.org().credits_micros == before + 1_500_000
    member = org_console(gateway, "default")
    assert member.status("/admin/orgs/adjust", org=str(org_id), kind="refund", amount="9", reason="me") == 403
    assert member.status("/admin/plans", preset="pro") == 403
