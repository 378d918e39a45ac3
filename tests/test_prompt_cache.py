"""Provider prompt caching: Anthropic breakpoints on a long stable prefix, an OpenAI
`prompt_cache_key` per org, each applied to the route that takes it (pass-through or translated,
first route or fallback); cached tokens priced at the route's cached price; off per config, org or
request; a failing layer never fails the request. Clients are the official SDKs."""

import anthropic
import pytest

from gateway.pipeline.savings import prompt_cache
from tests.conftest import configure_savings, savings_override
from tests.test_compression import add_catalog

LONG = " ".join(f"rule{i}" for i in range(1500))  # about 3,500 tokens: cacheable on every model
EPHEMERAL = {"type": "ephemeral"}
# anthropic-test prices (conftest): input 3000, cached input 300 (USD per Mtok): a cached token saves
# 2700 micro-dollars against the list price.
CACHED_SAVING_MICROS = 2700
CACHE_WRITE_PREMIUM_MICROS = 750


def claude(gw, key=None) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key or gw.api_key, max_retries=0)


def turns(last: str = "and now?") -> list[dict]:
    return [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi, what do you need?"},
            {"role": "user", "content": last}]


def sent_to_anthropic(fake) -> dict:
    return [r for r in fake.requests if r["path"] == "/v1/messages"][-1]["body"]


def sent_to_openai(fake) -> dict:
    return [r for r in fake.requests if r["path"] == "/v1/chat/completions"][-1]["body"]


def test_anthropic_breakpoints_and_cached_tokens_at_the_cached_price(gateway, fake_anthropic):
    """A prefix seen once gets no breakpoint (a write nobody may read); seen again, it does. (This
    fake reports cache reads whatever the markup: the first row's reads are not the gateway's.)"""
    first = claude(gateway).messages.with_raw_response.create(
        model="anthropic-test/claude-cached", max_tokens=50, system=LONG, messages=turns())
    assert sent_to_anthropic(fake_anthropic)["system"] == LONG
    (row,) = gateway.rows(request_id=first.headers["x-request-id"])
    assert row.cached_tokens > 0 and "prompt_cache" not in row.saved_by  # the provider's, not ours
    assert row.benchmark_micros == row.charge_micros
    raw = claude(gateway).messages.with_raw_response.create(
        model="anthropic-test/claude-cached", max_tokens=50, system=LONG, messages=turns())
    assert raw.parse().usage.cache_read_input_tokens > 0
    body = sent_to_anthropic(fake_anthropic)
    assert body["system"] == [{"type": "text", "text": LONG, "cache_control": EPHEMERAL}]
    assert body["messages"][0] == {"role": "user", "content": "hello"}
    assert body["messages"][1]["content"] == [{"type": "text", "text": "hi, what do you need?",
                                               "cache_control": EPHEMERAL}]  # the end of the earlier turns
    assert body["messages"][2] == {"role": "user", "content": "and now?"}  # the new turn: not marked
    assert float(raw.headers["x-gateway-saved"]) > 0
    (row,) = gateway.rows(request_id=raw.headers["x-request-id"])
    assert row.cached_tokens > 0
    # reads save 2700/Mtok-token each; writes cost Anthropic's 1.25x premium (750 more each)
    saving = row.cached_tokens * CACHED_SAVING_MICROS - row.cache_write_tokens * CACHE_WRITE_PREMIUM_MICROS
    assert f"prompt_cache={saving}" in row.saved_by
    assert row.charge_micros == row.benchmark_micros - saving


def test_tools_get_a_breakpoint_when_they_alone_are_long_enough(gateway, fake_anthropic):
    tools = [{"name": f"tool_{i}", "description": LONG[:2000], "input_schema": {"type": "object"}}
             for i in range(6)]
    for _ in range(2):  # the second time, the tool set is a stable prefix
        claude(gateway).messages.create(model="anthropic-test/claude-fake", max_tokens=50, tools=tools,
                                        messages=[{"role": "user", "content": "hi"}])
    body = sent_to_anthropic(fake_anthropic)
    assert [t.get("cache_control") for t in body["tools"]] == [None] * 5 + [EPHEMERAL]
    assert body["messages"] == [{"role": "user", "content": "hi"}]  # nothing before it to cache


def test_short_prefix_is_left_alone(gateway, fake_anthropic):
    claude(gateway).messages.create(model="anthropic-test/claude-fake", max_tokens=50, system="Be brief.",
                                    messages=turns())
    body = sent_to_anthropic(fake_anthropic)
    assert body["system"] == "Be brief." and body["messages"] == turns()


def test_the_clients_own_breakpoints_are_left_alone(gateway, fake_anthropic):
    system = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    claude(gateway).messages.create(model="anthropic-test/claude-fake", max_tokens=50, system=system,
                                    messages=turns())
    body = sent_to_anthropic(fake_anthropic)
    assert body["system"] == system and body["messages"] == turns()


def test_openai_routes_get_one_cache_key_per_org(gateway, fake_openai):
    other = gateway.new_org("other", usd=100)  # room for calls holding their worst case
    keys = {}
    for org_id, api_key in ((gateway.org().id, gateway.api_key), (other.id, gateway.new_key("other"))):
        raw = gateway.sdk(api_key).chat.completions.with_raw_response.create(
            model="test/fake-cached", messages=[{"role": "system", "content": LONG}, *turns()])
        keys[org_id] = sent_to_openai(fake_openai)["prompt_cache_key"]
        (row,) = gateway.rows(request_id=raw.headers["x-request-id"])
        # OpenAI caches by itself: a direct call gets the same discount, so the gateway claims none
        assert row.cached_tokens > 0 and "prompt_cache=" not in row.saved_by
        assert row.benchmark_micros == row.charge_micros
    assert keys == {gateway.org().id: f"gw-org-{gateway.org().id}", other.id: f"gw-org-{other.id}"}

    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=turns())
    assert "prompt_cache_key" not in sent_to_openai(fake_openai)  # too short to be cached at all
    gateway.sdk().chat.completions.create(model="test/cheap", messages=[{"role": "system", "content": LONG}],
                                          extra_body={"prompt_cache_key": "mine"})
    assert sent_to_openai(fake_openai)["prompt_cache_key"] == "mine"  # the client's own key wins

    configure_savings(gateway, context_dedupe={"enabled": True})  # a rewritten (re-encoded) request keeps it too
    doc = "A paragraph long enough to be deduplicated, pasted twice by the user on purpose. " * 4
    pasted = [{"role": "user", "content": doc}, {"role": "assistant", "content": "ok"},
              {"role": "user", "content": doc}]
    gateway.sdk().chat.completions.create(model="test/cheap", messages=pasted,
                                          extra_body={"prompt_cache_key": "mine"})
    body = sent_to_openai(fake_openai)
    assert "same text as in message 1" in body["messages"][2]["content"]
    assert body["prompt_cache_key"] == "mine"


def test_translated_routes_get_the_markup_of_their_kind(gateway, fake_openai, fake_anthropic):
    for _ in range(2):  # seen once before: marked
        raw = gateway.sdk().chat.completions.with_raw_response.create(  # OpenAI client, Anthropic upstream
            model="anthropic-test/claude-cached", messages=[{"role": "system", "content": LONG}, *turns()])
    body = sent_to_anthropic(fake_anthropic)
    assert body["system"] == [{"type": "text", "text": LONG, "cache_control": EPHEMERAL}]
    assert body["messages"][1]["content"][-1]["cache_control"] == EPHEMERAL
    assert "prompt_cache_key" not in body
    assert "prompt_cache=" in gateway.rows(request_id=raw.headers["x-request-id"])[0].saved_by

    claude(gateway).messages.create(model="test/fake-gpt", max_tokens=50, system=LONG,  # and the other way
                                    messages=turns())
    body = sent_to_openai(fake_openai)
    assert body["prompt_cache_key"] == f"gw-org-{gateway.org().id}"
    assert "cache_control" not in str(body)


def test_a_fallback_of_another_kind_gets_its_own_markup(gateway, fake_openai, fake_anthropic):
    """The first route (OpenAI kind) fails; the fallback (Anthropic kind) gets breakpoints."""
    add_catalog(gateway, {
        "models": [{"slug": "mixed/primary", "routes": [{"provider": "fake", "upstream_model": "error-500",
                                                         "input_per_mtok": 3000, "output_per_mtok": 15000}]}],
        "fallbacks": {"mixed/primary": ["anthropic-test/claude-fake"]}})
    for _ in range(2):  # seen once before: marked
        reply = gateway.sdk().chat.completions.create(model="mixed/primary",
                                                      messages=[{"role": "system", "content": LONG}, *turns()])
    assert reply.choices[0].message.content == "Hello from fake claude-fake."
    assert sent_to_openai(fake_openai)["prompt_cache_key"] == f"gw-org-{gateway.org().id}"
    assert "cache_control" not in str(sent_to_openai(fake_openai))
    body = sent_to_anthropic(fake_anthropic)
    assert body["system"][-1]["cache_control"] == EPHEMERAL and "prompt_cache_key" not in body


def test_disabled_per_config_org_or_request(gateway, fake_openai, fake_anthropic):
    """(test/cheap: the default org's $10 of credits last for all these long prompts.)"""
    def key_sent(headers=None, api_key=None):
        gateway.sdk(api_key).chat.completions.create(model="test/cheap", extra_headers=headers or {},
                                                     messages=[{"role": "system", "content": LONG}, *turns()])
        return sent_to_openai(fake_openai).get("prompt_cache_key")

    assert key_sent() is not None
    assert key_sent({"x-gateway-prompt-cache": "off"}) is None
    claude(gateway).messages.create(model="anthropic-test/claude-fake", max_tokens=50, system=LONG,
                                    messages=turns(), extra_headers={"x-gateway-prompt-cache": "off"})
    assert sent_to_anthropic(fake_anthropic)["system"] == LONG
    configure_savings(gateway, prompt_cache={"enabled": False})
    assert key_sent() is None
    assert key_sent({"x-gateway-prompt-cache": "on"}) is not None
    configure_savings(gateway, prompt_cache={"enabled": True})
    gateway.new_org("nocache")
    savings_override(gateway, "nocache", "prompt_cache", enabled=False)
    assert key_sent(api_key=gateway.new_key("nocache")) is None
    assert key_sent() is not None


def test_min_tokens_raises_the_floor(gateway, fake_anthropic):
    configure_savings(gateway, prompt_cache={"enabled": True, "min_tokens": 100_000})
    claude(gateway).messages.create(model="anthropic-test/claude-fake", max_tokens=50, system=LONG,
                                    messages=turns())
    assert sent_to_anthropic(fake_anthropic)["system"] == LONG


def test_a_failing_layer_does_not_fail_the_request(gateway, fake_anthropic, monkeypatch):
    def broken(*_args):
        raise RuntimeError("boom")

    monkeypatch.setattr(prompt_cache, "mark_body", broken)
    message = claude(gateway).messages.create(model="anthropic-test/claude-fake", max_tokens=50, system=LONG,
                                              messages=turns())
    assert message.content[0].text == "Hello from fake claude-fake."
    assert sent_to_anthropic(fake_anthropic)["system"] == LONG


@pytest.mark.parametrize("model, minimum", [
    ("claude-sonnet-4-5-20250929", 1024), ("claude-opus-4-1-20250805", 1024),
    ("claude-3-7-sonnet-latest", 1024),
    ("claude-opus-4-5-20251101", 4096), ("claude-opus-4-6", 4096), ("claude-haiku-4-5", 4096),
    ("claude-3-5-haiku-20241022", 2048), ("claude-3-haiku-20240307", 2048)])
def test_model_minimums_follow_anthropics_table(model, minimum):
    assert prompt_cache.model_minimum(model) == minimum
