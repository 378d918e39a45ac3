"""GET /v1/providers: providers (name, kind, never a key, host or URL) with each route's live health,
and request counts of the caller's own org only, OpenAI-style."""

import openai
import pytest
import requests

from gateway import db, seed
from tests.conftest import UPSTREAM_KEY

MSG = [{"role": "user", "content": "hi"}]


def providers(gateway, key=None) -> requests.Response:
    auth = {"Authorization": f"Bearer {key or gateway.api_key}"}
    return requests.get(gateway.v1 + "/providers", headers=auth)


def route_of(body: dict, provider: str, model: str) -> dict:
    p = next(p for p in body["data"] if p["id"] == provider)
    return next(r for r in p["routes"] if r["model"] == model)


def test_lists_providers_without_address_or_secrets(gateway):
    r = providers(gateway)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert body["object"] == "list"
    fake = next(p for p in body["data"] if p["id"] == "fake")
    port = gateway_upstream_port(gateway)
    assert set(fake) == {"id", "object", "kind", "enabled", "routes"}
    assert fake == {**fake, "object": "provider", "kind": "openai", "enabled": True}
    assert UPSTREAM_KEY not in r.text and "127.0.0.1" not in r.text and str(port) not in r.text
    route = route_of(body, "fake", "test/fake-gpt")
    assert route["upstream_model"] == "fake-gpt" and route["reference"] is True
    untouched = {"state": "closed", "error_rate": 0.0, "latency_ms": None, "consecutive_failures": 0,
                 "last_hour": {"requests": 0, "errors": 0, "avg_latency_ms": None}}
    assert route["health"] == untouched


def test_request_counts_are_the_callers_org_only(gateway):
    gateway.new_org("other")
    other_key = gateway.new_key("other")
    for _ in range(3):
        gateway.sdk(other_key).chat.completions.create(model="test/fake-gpt", messages=MSG)
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=MSG)
    mine = route_of(providers(gateway).json(), "fake", "test/fake-gpt")["health"]
    theirs = route_of(providers(gateway, other_key).json(), "fake", "test/fake-gpt")["health"]
    assert mine["last_hour"]["requests"] == 1 and theirs["last_hour"]["requests"] == 3
    assert "in_flight" not in mine


def gateway_upstream_port(gateway) -> int:
    from urllib.parse import urlsplit

    from gateway.memo import MEMO

    return urlsplit(MEMO.catalog.providers["fake"].base_url).port


def test_health_follows_requests_and_the_breaker_opens(gateway):
    sdk = gateway.sdk()
    for _ in range(2):
        sdk.chat.completions.create(model="test/fake-gpt", messages=MSG)
    for _ in range(5):  # the default breaker opens after 5 consecutive failures
        with pytest.raises(openai.InternalServerError):
            sdk.chat.completions.create(model="test/error-503", messages=MSG)
    with pytest.raises(openai.InternalServerError) as e:
        sdk.chat.completions.create(model="test/error-503", messages=MSG)
    assert e.value.status_code == 503  # refused by the open breaker, without calling upstream

    body = providers(gateway).json()
    ok = route_of(body, "fake", "test/fake-gpt")["health"]
    assert ok["state"] == "closed" and ok["last_hour"]["requests"] == 2 and ok["last_hour"]["errors"] == 0
    measured = (ok["latency_ms"], ok["last_hour"]["avg_latency_ms"])  # present once requests were timed
    assert None not in measured
    bad = route_of(body, "fake", "test/error-503")["health"]
    assert bad["state"] == "open" and bad["consecutive_failures"] == 5
    assert bad["last_hour"] == {**bad["last_hour"], "requests": 5, "errors": 5}
    assert 0 < bad["error_rate"] <= 1


def test_any_valid_key_may_list_and_others_get_openai_errors(gateway):
    assert providers(gateway, gateway.new_key(scope="read")).status_code == 200
    missing = requests.get(gateway.v1 + "/providers")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    wrong = providers(gateway, "gw-not-a-key")
    assert wrong.status_code == 401
    assert wrong.json() == {"error": {"message": "Incorrect API key provided.", "param": None,
                                      "type": "invalid_request_error", "code": "invalid_api_key"}}


def test_a_disabled_provider_is_listed_without_routes(gateway):
    config = seed.parse("""
providers:
  - {name: spare, kind: openai, base_url: "https://user:hunter2@spare.example:8443/v1?x=1",
     api_key: sk-spare-secret, enabled: false}
models:
  - slug: spare/model
    routes: [{provider: spare, upstream_model: m, input_per_mtok: 1, output_per_mtok: 2}]
""")
    with db.write_lock, db.session_scope() as s:
        seed.apply(s, config, "test-secret")
    gateway.flush()
    r = providers(gateway)
    spare = next(p for p in r.json()["data"] if p["id"] == "spare")
    assert spare["enabled"] is False and spare["routes"] == [] and "host" not in spare
    assert "hunter2" not in r.text and "sk-spare-secret" not in r.text and "spare.example" not in r.text
