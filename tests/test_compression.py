"""Conversation compression: older turns trimmed middle-out or summarised by a cheap model (cached
per org and prefix, billed as its own ledger row), tool calls never separated from their results,
the latest turns verbatim; opt-in per config, org and request; a failure never fails the request.

Clients are the official SDKs; the fakes' `echo` models answer with the body they received, so a
test sees exactly what went upstream."""

import anthropic
import orjson
import pytest
from sqlalchemy import select

from gateway import db, memo, seed, wire
from gateway.models import ConversationSummary
from gateway.pipeline.savings import compress
from tests.conftest import configure_savings, database_statements, savings_override

ECHO = "test/echo"
SUMMARY_MODEL = "test/cheap"  # the fake answers "Hello from fake fake-gpt."
SYSTEM = {"role": "system", "content": "You are terse."}


def add_catalog(gw, config: dict) -> None:
    """Upsert models/fallbacks as the config file would, and let the catalog reload."""
    with db.write_lock, db.session_scope() as s:
        seed.apply(s, config, "test-secret")
        memo.announce(s, "catalog")
    gw.flush()


def chat(gw, messages, model=ECHO, key=None, headers=None, **kw):
    """(the body the upstream received, response headers) through the OpenAI SDK and the echo model."""
    raw = gw.sdk(key).chat.completions.with_raw_response.create(
        model=model, messages=messages, extra_headers=headers or {}, **kw)
    return orjson.loads(raw.parse().choices[0].message.content), raw.headers


def filler(tag: str, n: int = 40) -> str:
    return " ".join(f"{tag}-{i}" for i in range(n))


def conversation(turns: int) -> list[dict]:
    messages = [SYSTEM, {"role": "user", "content": "first question " + filler("q0")}]
    for i in range(1, turns):
        messages.append({"role": "assistant", "content": f"answer {i} " + filler(f"a{i}")})
        messages.append({"role": "user", "content": f"question {i} " + filler(f"q{i}")})
    return messages


def summary_calls(fake) -> list[dict]:
    chats = [r["body"] for r in fake.requests if r["path"] == "/v1/chat/completions"]
    return [b for b in chats if b["messages"][0]["content"] == compress.SUMMARY_PROMPT]


def saved(headers) -> float:
    return float(headers["x-gateway-saved"])


def test_trim_keeps_system_first_turn_and_latest_turns_and_records_the_saving(gateway, fake_openai):
    configure_savings(gateway, compression={"enabled": True, "budget_tokens": 300, "keep_last_turns": 2})
    messages = conversation(8)  # system + 15 turns
    upstream, headers = chat(gateway, messages)
    sent = upstream["messages"]
    assert sent[:2] == messages[:2]  # system and the first user turn, verbatim
    assert "omitted" in sent[2]["content"] and sent[2]["role"] == "user"
    kept = sent[3:]
    assert 2 <= len(kept) < len(messages) - 2 and kept == messages[-len(kept):]  # the latest turns, verbatim
    assert fake_openai.requests[-1]["body"]["messages"] == sent
    assert saved(headers) > 0
    row = gateway.rows(request_id=headers["x-request-id"])[0]
    assert "compression=" in row.saved_by and row.saved_micros > 0
    assert row.benchmark_micros > row.charge_micros


def test_summary_cut_is_stable_for_the_next_turns(gateway):
    """Summary mode rounds its cut up to a multiple of keep_last_turns: a conversation that grows by
    one exchange drops the same turns, so the stored summary (and the cached prefix) serve it."""
    configure_savings(gateway, compression={"enabled": True, "budget_tokens": 300, "keep_last_turns": 4,
                                    "mode": "summary", "summary_model": SUMMARY_MODEL})
    first, _ = chat(gateway, conversation(9))
    second, _ = chat(gateway, conversation(10))
    assert first["messages"][:3] == second["messages"][:3]  # system, first turn, the same summary
    assert len(second["messages"]) == len(first["messages"]) + 2


def counted(messages: list[dict]) -> int:
    """Prompt tokens as the layer counts them."""
    return compress.prompt_tokens(wire.codec("chat.completions").decode_request(
        {"model": ECHO, "messages": messages}))


def omitted(sent: list[dict]) -> int:
    notes = [m["content"] for m in sent if isinstance(m.get("content"), str) and "were omitted" in m["content"]]
    assert len(notes) == 1, sent
    return int(notes[0].split()[0].lstrip("["))


def test_trim_cuts_only_what_the_budget_needs(gateway):
    """A conversation a little over its budget loses a turn or two, not everything but the last turns:
    a fact stated in the middle survives, and putting back the newest dropped turn would not fit."""
    messages = conversation(12)
    messages[9]["content"] += " The vault code is 4417."  # a user turn in the middle
    budget = counted(messages) - 60
    configure_savings(gateway, compression={"enabled": True, "budget_tokens": budget, "keep_last_turns": 2})
    sent = chat(gateway, messages)[0]["messages"]
    assert any("vault code is 4417" in (m["content"] or "") for m in sent)
    n = omitted(sent)
    assert 1 <= n <= 2
    assert counted(sent) <= budget
    assert sent[3:] == messages[2 + n:]  # the oldest middle turns went, everything after stayed verbatim
    restored = sent[:2] + messages[2 + n - 1:]  # one dropped turn back, note gone
    assert counted(restored) > budget


def test_first_user_turn_is_kept_after_an_opening_greeting(gateway):
    """An app's greeting may open the chat; the user's first turn (a code word, say) still stays."""
    messages = [SYSTEM, {"role": "assistant", "content": "Hi! How can I help you today?"},
                {"role": "user", "content": "Remember the code word TANGERINE. " + filler("q0")}]
    for i in range(1, 10):
        messages.append({"role": "assistant", "content": f"answer {i} " + filler(f"a{i}")})
        messages.append({"role": "user", "content": f"question {i} " + filler(f"q{i}")})
    messages.append({"role": "user", "content": "What was the code word?"})
    configure_savings(gateway, compression={"enabled": True, "budget_tokens": 300, "keep_last_turns": 2})
    sent = chat(gateway, messages)[0]["messages"]
    assert sent[:3] == messages[:3]  # system, greeting, first user turn
    assert omitted(sent) > 0 and sent[-1] == messages[-1]


def test_under_budget_or_disabled_is_left_alone(gateway, fake_openai):
    messages = conversation(8)
    upstream, headers = chat(gateway, messages)  # compression is off by default
    assert upstream["messages"] == messages and "compression" not in gateway.rows(
        request_id=headers["x-request-id"])[0].saved_by
    configure_savings(gateway, compression={"enabled": False, "budget_tokens": 300})
    upstream, _ = chat(gateway, messages, headers={"x-gateway-compression": "on"})  # on for this request
    assert len(upstream["messages"]) < len(messages)
    configure_savings(gateway, compression={"enabled": True, "budget_tokens": 100_000})
    upstream, _ = chat(gateway, messages)  # under the budget
    assert upstream["messages"] == messages
    configure_savings(gateway, compression={"enabled": True, "budget_tokens": 300})
    upstream, _ = chat(gateway, messages, headers={"x-gateway-compression": "off"})  # off for this request
    assert upstream["messages"] == messages


def test_per_org_override(gateway):
    configure_savings(gateway, compression={"enabled": True, "budget_tokens": 300})
    gateway.new_org("quiet")
    savings_override(gateway, "quiet", "compression", enabled=False)
    messages = conversation(8)
    assert len(chat(gateway, messages)[0]["messages"]) < len(messages)
    assert chat(gateway, messages, key=gateway.new_key("quiet"))[0]["messages"] == messages


def tool_conversation() -> list[dict]:
    """Rounds of a tool call and its result, with user turns between them."""
    messages = [SYSTEM, {"role": "user", "content": "plan a trip " + filler("q")}]
    for i in range(6):
        arguments = [orjson.dumps({"q": filler(f"x{i}{j}", 10)}).decode() for j in range(1 + i % 2)]
        calls = [{"id": f"call_{i}_{j}", "type": "function", "function": {"name": "lookup", "arguments": a}}
                 for j, a in enumerate(arguments)]  # one call, or two in parallel
        messages.append({"role": "assistant", "content": None, "tool_calls": calls})
        messages += [{"role": "tool", "tool_call_id": c["id"], "content": f"result {filler(c['id'], 20)}"}
                     for c in calls]
        messages.append({"role": "assistant", "content": f"noted {i}"})
        messages.append({"role": "user", "content": f"and then {i}"})
    return messages


TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]


def assert_pairs_whole(messages: list[dict]) -> None:
    """Every tool result follows the call it answers; every call is followed by its results."""
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and m.get("tool_calls"):
            ids = [c["id"] for c in m["tool_calls"]]
            results = messages[i + 1:i + 1 + len(ids)]
            assert [r.get("tool_call_id") for r in results] == ids
        if m["role"] == "tool":
            j = i - 1
            while messages[j]["role"] == "tool":
                j -= 1
            assert m["tool_call_id"] in [c["id"] for c in messages[j].get("tool_calls") or []]


@pytest.mark.parametrize("keep", [1, 2, 3, 4, 5])
def test_tool_calls_and_results_are_never_split(gateway, keep):
    configure_savings(gateway, compression={"enabled": True, "budget_tokens": 200, "keep_last_turns": keep})
    messages = tool_conversation()
    upstream, _ = chat(gateway, messages, tools=TOOLS)
    sent = upstream["messages"]
    assert len(sent) < len(messages) and sent[:2] == messages[:2] and "omitted" in sent[2]["content"]
    assert_pairs_whole(sent)
    tail = sent[3:]  # after the note: the latest turns, verbatim, at least `keep` of them
    assert tail == messages[-len(tail):]
    assert sum(m["role"] != "tool" for m in tail) >= keep  # a turn starts at every non-tool message


def test_anthropic_tool_use_and_results_stay_together(gateway, fake_anthropic):
    """Anthropic client, Anthropic upstream: the rewritten request is re-encoded in Messages form."""
    configure_savings(gateway, compression={"enabled": True, "budget_tokens": 200, "keep_last_turns": 2},
              prompt_cache={"enabled": False})  # no breakpoints: the turns compare verbatim
    messages = [{"role": "user", "content": "plan " + filler("q")}]
    for i in range(5):
        messages.append({"role": "assistant", "content": [
            {"type": "text", "text": f"checking {i}"},
            {"type": "tool_use", "id": f"toolu_{i}", "name": "lookup", "input": {"q": filler(f"x{i}", 10)}}]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": filler(f"r{i}", 20)}]})
    client = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.api_key, max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="anthropic-test/echo", max_tokens=50, system="Be brief.", messages=messages,
        tools=[{"name": "lookup", "input_schema": TOOLS[0]["function"]["parameters"]}])
    sent = fake_anthropic.requests[-1]["body"]["messages"]
    assert len(sent) < len(messages) and sent[-2:] == messages[-2:]
    for i, m in enumerate(sent):
        results = [b["tool_use_id"] for b in m["content"] if b["type"] == "tool_result"]
        if results:
            assert results == [b["id"] for b in sent[i - 1]["content"] if b["type"] == "tool_use"]
    assert [m["role"] for m in sent] == [("user", "assistant")[i % 2] for i in range(len(sent))]
    assert saved(raw.headers) > 0


def test_summary_is_billed_cached_per_org_and_reloaded(gateway, fake_openai):
    configure_savings(gateway, compression={"enabled": True, "budget_tokens": 300, "keep_last_turns": 2,
                                    "mode": "summary", "summary_model": SUMMARY_MODEL})
    messages = conversation(8)
    upstream, headers = chat(gateway, messages)
    assert len(summary_calls(fake_openai)) == 1
    assert "Hello from fake fake-gpt." in upstream["messages"][2]["content"]
    assert upstream["messages"][2]["content"].startswith("[Summary of")
    assert "question 1 " in summary_calls(fake_openai)[0]["messages"][1]["content"]  # a dropped turn
    request_id = headers["x-request-id"]
    (parent,) = gateway.rows(request_id=request_id)
    (summary_row,) = gateway.rows(request_id=request_id + ".summary")
    assert summary_row.endpoint == "compression.summary" and summary_row.org_id == parent.org_id
    assert summary_row.charge_micros > 0 and summary_row.requested_model == SUMMARY_MODEL
    assert "compression=" in parent.saved_by

    again, _ = chat(gateway, messages)  # same conversation prefix: the stored summary, no new call
    assert len(summary_calls(fake_openai)) == 1 and again["messages"] == upstream["messages"]

    other = gateway.new_org("other")
    other_key = gateway.new_key("other")
    chat(gateway, messages, key=other_key)  # another org never reads this one's summary
    assert len(summary_calls(fake_openai)) == 2
    assert sum(r.endpoint == "compression.summary" and r.org_id == other.id for r in gateway.rows()) == 1

    with db.session_scope() as s:
        stored = {(r.org_id, r.summary) for r in s.scalars(select(ConversationSummary))}
    assert stored == {(parent.org_id, "Hello from fake fake-gpt."), (other.id, "Hello from fake fake-gpt.")}
    compress.SUMMARIES.clear()  # as after a restart: load() brings them back from the table
    with db.session_scope() as s:
        compress.load(s)
    assert len(compress.SUMMARIES) == 2
    chat(gateway, messages, key=other_key)
    assert len(summary_calls(fake_openai)) == 2


def test_failed_summary_leaves_the_request_whole(gateway):
    configure_savings(gateway, compression={"enabled": True, "budget_tokens": 300, "mode": "summary",
                                    "summary_model": "test/error-400"})
    messages = conversation(8)
    upstream, headers = chat(gateway, messages)
    assert upstream["messages"] == messages
    (summary_row,) = gateway.rows(request_id=headers["x-request-id"] + ".summary")
    assert summary_row.status == 400 and summary_row.charge_micros == 0


def test_stream_is_compressed_too(gateway, fake_openai):
    configure_savings(gateway, compression={"enabled": True, "budget_tokens": 300, "keep_last_turns": 2})
    messages = conversation(8)
    stream = gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=messages, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello from fake fake-gpt."
    assert len(fake_openai.requests[-1]["body"]["messages"]) < len(messages)
    row = gateway.rows()[-1]
    assert "compression=" in row.saved_by


def test_a_failing_layer_does_not_fail_the_request(gateway, monkeypatch):
    configure_savings(gateway, compression={"enabled": True, "budget_tokens": 300})

    def broken(_messages):
        raise RuntimeError("boom")

    monkeypatch.setattr(compress, "turns", broken)
    messages = conversation(8)
    upstream, headers = chat(gateway, messages)
    assert upstream["messages"] == messages
    assert "compression" not in gateway.rows(request_id=headers["x-request-id"])[0].saved_by


def test_summaries_never_query_the_database(gateway):
    """A summary made (a call through the pipeline) and a summary reused: memory only."""
    configure_savings(gateway, compression={"enabled": True, "budget_tokens": 300, "mode": "summary",
                                    "summary_model": SUMMARY_MODEL})
    with database_statements() as statements:
        first, _ = chat(gateway, conversation(8))
        second, _ = chat(gateway, conversation(8))
    assert statements == []
    assert first["messages"][2]["content"].startswith("[Summary of") and second == first
