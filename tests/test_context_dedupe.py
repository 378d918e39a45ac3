"""Context dedupe: a document pasted into several messages of one request goes upstream once, later
copies as a short reference; the saving is recorded; opt-in per config, org and request; nothing is
stored, so nothing crosses requests or orgs; a failing layer never fails the request."""

import anthropic
import pytest

from gateway.pipeline.savings import context_dedupe
from tests.conftest import configure_savings, savings_override
from tests.test_compression import chat

DOC = ("The quarterly report shows revenue of 4.2 million, up eleven percent year over year, driven by "
       "the enterprise tier. Churn fell to 2.1 percent. Operating costs rose with the new data centre in "
       "Frankfurt, which opens in March and will host every European customer by the end of the year.")
OTHER = ("Appendix: the board approved the hiring plan of twelve engineers and three designers, to be "
         "completed before the summer, and asked for a review of the pricing of the starter plan.")


def pasted_twice() -> list[dict]:
    return [{"role": "system", "content": "You answer questions about documents."},
            {"role": "user", "content": f"Here is the report:\n\n{DOC}\n\n{OTHER}\n\nWhat was the revenue?"},
            {"role": "assistant", "content": "Revenue was 4.2 million."},
            {"role": "user", "content": f"Again, the report:\n\n{DOC}\n\nWhere is the new data centre?"}]


def test_a_repeated_document_is_sent_once(gateway, fake_openai):
    configure_savings(gateway, context_dedupe={"enabled": True})
    messages = pasted_twice()
    upstream, headers = chat(gateway, messages)
    sent = upstream["messages"]
    assert sent[:3] == messages[:3]  # the first copy (and everything before the repeat) untouched
    assert DOC not in sent[3]["content"]
    reference = '[same text as in message 2 above: "The quarterly report shows revenue of…"]'
    assert sent[3]["content"] == f"Again, the report:\n\n{reference}\n\nWhere is the new data centre?"
    assert fake_openai.requests[-1]["body"]["messages"] == sent
    assert float(headers["x-gateway-saved"]) > 0
    (row,) = gateway.rows(request_id=headers["x-request-id"])
    assert "context_dedupe=" in row.saved_by


def test_a_repeat_within_one_message(gateway):
    configure_savings(gateway, context_dedupe={"enabled": True})
    upstream, _ = chat(gateway, [{"role": "user", "content": f"{DOC}\n\n{DOC}\n\nSame twice?"}])
    assert upstream["messages"][0]["content"].startswith(f"{DOC}\n\n[same text as earlier in this message:")


def test_anthropic_tool_result_and_later_paste(gateway, fake_anthropic):
    """The document came back from a tool, then the user pastes it again: the paste becomes a reference."""
    configure_savings(gateway, context_dedupe={"enabled": True}, prompt_cache={"enabled": False})
    messages = [
        {"role": "user", "content": "Fetch the report."},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "fetch", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": DOC}]},
        {"role": "assistant", "content": "Fetched."},
        {"role": "user", "content": f"Is this the same?\n\n{DOC}"}]
    client = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.api_key, max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="anthropic-test/echo", max_tokens=50, messages=messages,
        tools=[{"name": "fetch", "input_schema": {"type": "object", "properties": {}}}])
    sent = [r for r in fake_anthropic.requests if r["path"] == "/v1/messages"][-1]["body"]["messages"]
    assert sent[2]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_1", "content": DOC}]
    assert sent[4]["content"][0]["text"].startswith("Is this the same?\n\n[same text as in message 3 above:")
    assert float(raw.headers["x-gateway-saved"]) > 0


def test_short_or_single_blocks_are_left_alone(gateway):
    configure_savings(gateway, context_dedupe={"enabled": True, "min_chars": 1000})
    messages = pasted_twice()
    assert chat(gateway, messages)[0]["messages"] == messages  # DOC is shorter than min_chars
    configure_savings(gateway, context_dedupe={"enabled": True})
    single = [{"role": "user", "content": f"{DOC}\n\nSummarise."}]
    assert chat(gateway, single)[0]["messages"] == single


def test_every_request_stands_alone(gateway):
    """Nothing is remembered: a document another request (or org) sent is never referenced."""
    configure_savings(gateway, context_dedupe={"enabled": True})
    chat(gateway, pasted_twice())
    gateway.new_org("other")
    single = [{"role": "user", "content": f"{DOC}\n\nSummarise."}]
    assert chat(gateway, single, key=gateway.new_key("other"))[0]["messages"] == single
    assert chat(gateway, single)[0]["messages"] == single


@pytest.mark.parametrize("config, header, deduped", [
    (None, None, False),  # off by default
    ({"enabled": False}, "on", True),
    ({"enabled": True}, "off", False),
])
def test_config_and_request_switches(gateway, config, header, deduped):
    if config is not None:
        configure_savings(gateway, context_dedupe=config)
    messages = pasted_twice()
    upstream, _ = chat(gateway, messages, headers={"x-gateway-context-dedupe": header} if header else None)
    assert (upstream["messages"] != messages) is deduped


def test_per_org_override(gateway):
    gateway.new_org("careful")
    savings_override(gateway, "careful", "context_dedupe", enabled=True)
    messages = pasted_twice()
    assert chat(gateway, messages)[0]["messages"] == messages
    assert chat(gateway, messages, key=gateway.new_key("careful"))[0]["messages"] != messages


def test_a_failing_layer_does_not_fail_the_request(gateway, monkeypatch):
    configure_savings(gateway, context_dedupe={"enabled": True})

    def broken(*_args):
        raise RuntimeError("boom")

    monkeypatch.setattr(context_dedupe, "reference", broken)
    messages = pasted_twice()
    upstream, headers = chat(gateway, messages)
    assert upstream["messages"] == messages
    assert "context_dedupe" not in gateway.rows(request_id=headers["x-request-id"])[0].saved_by
