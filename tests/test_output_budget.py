"""Output budget shaping: a request without an output limit gets the configured cap (or the model's
max_output_tokens), in the field of its own dialect; a limit the client gave is never lowered (nor
raised); off per config, org or request; a failing layer never fails the request."""

import anthropic
import pytest

from gateway.pipeline.savings import output_budget
from tests.conftest import configure_savings, savings_override
from tests.test_compression import add_catalog

HI = [{"role": "user", "content": "hi"}]


def sent_to_openai(fake) -> dict:
    return [r for r in fake.requests if r["path"] == "/v1/chat/completions"][-1]["body"]


def sent_to_anthropic(fake) -> dict:
    return [r for r in fake.requests if r["path"] == "/v1/messages"][-1]["body"]


def test_chat_without_a_limit_gets_the_cap(gateway, fake_openai):
    configure_savings(gateway, output_budget={"enabled": True, "default_max_tokens": 300})
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=HI)
    body = sent_to_openai(fake_openai)
    assert body["max_completion_tokens"] == 300 and "max_tokens" not in body


@pytest.mark.parametrize("given", [{"max_tokens": 5}, {"max_completion_tokens": 8_000},  # within test/*'s 8,192-token window
                                   {"max_tokens": 2000}])
def test_the_clients_limit_is_never_changed(gateway, fake_openai, given):
    configure_savings(gateway, output_budget={"enabled": True, "default_max_tokens": 300})
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=HI, **given)
    body = sent_to_openai(fake_openai)
    assert {k: body.get(k) for k in ("max_tokens", "max_completion_tokens") if k in body} == given


def test_the_models_own_cap_applies_when_no_default_is_set(gateway, fake_openai):
    add_catalog(gateway, {"models": [{"slug": "budget/capped", "max_output_tokens": 777, "routes": [
        {"provider": "fake", "upstream_model": "fake-gpt", "input_per_mtok": 1, "output_per_mtok": 2}]}]})
    gateway.sdk().chat.completions.create(model="budget/capped", messages=HI)
    assert sent_to_openai(fake_openai)["max_completion_tokens"] == 777
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=HI)  # no cap anywhere: nothing set
    body = sent_to_openai(fake_openai)
    assert "max_completion_tokens" not in body and "max_tokens" not in body
    configure_savings(gateway, output_budget={"enabled": True, "default_max_tokens": 5000})
    gateway.sdk().chat.completions.create(model="budget/capped", messages=HI)
    assert sent_to_openai(fake_openai)["max_completion_tokens"] == 777  # never above the model's maximum


def test_translated_to_anthropic(gateway, fake_anthropic):
    configure_savings(gateway, output_budget={"enabled": True, "default_max_tokens": 300})
    gateway.sdk().chat.completions.create(model="anthropic-test/claude-fake", messages=HI)
    assert sent_to_anthropic(fake_anthropic)["max_tokens"] == 300


def test_anthropic_client_without_max_tokens(gateway, fake_anthropic):
    configure_savings(gateway, output_budget={"enabled": True, "default_max_tokens": 300})
    client = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.api_key, max_retries=0)
    # the SDK types max_tokens as required; NOT_GIVEN leaves it out (a timeout, or it derives one from it)
    client.messages.create(model="anthropic-test/claude-fake", messages=HI, max_tokens=anthropic.NOT_GIVEN,
                           timeout=30)
    assert sent_to_anthropic(fake_anthropic)["max_tokens"] == 300
    client.messages.create(model="anthropic-test/claude-fake", messages=HI, max_tokens=4000)
    assert sent_to_anthropic(fake_anthropic)["max_tokens"] == 4000


def test_responses_without_a_limit(gateway, fake_openai):
    """The fake speaks chat only: the Responses request is translated, carrying the cap along."""
    configure_savings(gateway, output_budget={"enabled": True, "default_max_tokens": 300})
    gateway.sdk().responses.create(model="test/fake-gpt", input="hi")
    assert sent_to_openai(fake_openai)["max_tokens"] == 300
    gateway.sdk().responses.create(model="test/fake-gpt", input="hi", max_output_tokens=40)
    assert sent_to_openai(fake_openai)["max_tokens"] == 40


def test_off_per_config_org_or_request(gateway, fake_openai):
    configure_savings(gateway, output_budget={"enabled": True, "default_max_tokens": 300})
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=HI,
                                          extra_headers={"x-gateway-output-budget": "off"})
    assert "max_completion_tokens" not in sent_to_openai(fake_openai)
    gateway.new_org("free")
    savings_override(gateway, "free", "output_budget", enabled=False)
    gateway.sdk(gateway.new_key("free")).chat.completions.create(model="test/fake-gpt", messages=HI)
    assert "max_completion_tokens" not in sent_to_openai(fake_openai)
    configure_savings(gateway, output_budget={"enabled": False, "default_max_tokens": 300})
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=HI)
    assert "max_completion_tokens" not in sent_to_openai(fake_openai)
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=HI,
                                          extra_headers={"x-gateway-output-budget": "on"})
    assert sent_to_openai(fake_openai)["max_completion_tokens"] == 300


def test_with_a_rewritten_request(gateway, fake_openai):
    """Another layer rewrote the request (context dedupe): the cap goes into the rewritten request,
    under the chat key OpenAI takes for every model (reasoning models refuse `max_tokens`)."""
    doc = "A long paragraph about the weather in Lisbon, repeated on purpose. " * 5
    configure_savings(gateway, output_budget={"enabled": True, "default_max_tokens": 300},
              context_dedupe={"enabled": True})
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=[
        {"role": "user", "content": doc}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": doc}])
    body = sent_to_openai(fake_openai)
    assert body["max_completion_tokens"] == 300 and "max_tokens" not in body
    assert "same text as in message 1" in body["messages"][2]["content"]


def test_a_failing_layer_does_not_fail_the_request(gateway, fake_openai, monkeypatch):
    configure_savings(gateway, output_budget={"enabled": True, "default_max_tokens": 300})

    def broken(_ctx):
        raise RuntimeError("boom")

    monkeypatch.setattr(output_budget, "budget", broken)
    reply = gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=HI)
    assert reply.choices[0].message.content == "Hello from fake fake-gpt."
    assert "max_completion_tokens" not in sent_to_openai(fake_openai)
