"""Data protection end to end: the official SDKs through the gateway to the fake upstreams.

The fakes record what they receive: no seeded value may reach them; the client gets the values
back (non-stream and stream, tool calls included, chat completions, messages and responses).
"""

from __future__ import annotations

import json

import anthropic
import openai
import orjson
import pytest

from gateway import db
from gateway.models import App, DlpEvent, DlpRollup
from gateway.services import dlp as dlp_service
from gateway.services import tenancy
from gateway.services.errors import Forbidden
from tests.conftest import assemble, chat_calls, wait_for

EMAIL = "alice.smith@example.com"
PHONE = "+44 20 7946 0958"
CARD = "4111 1111 1111 1111"
KEY = "sk-proj-Zx8qP2mN9vL4kR7tQ1wE5yU3"
PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
       "KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n-----END RSA PRIVATE KEY-----")
SEEDED = (EMAIL, PHONE, CARD, KEY)
PROMPT = f"Write to {EMAIL}, call {PHONE}, charge card {CARD}, use key {KEY}."


def protect(gw, org: str = "default", rules: dict[str, str] | None = None, app_id: int | None = None) -> None:
    with db.write_lock, db.session_scope() as s:
        org_id = tenancy.org_by_name(s, org).id
        dlp_service.enable(s, dlp_service.CLI, org_id, app_id, rules)
    gw.flush()


def sent(fake) -> bytes:
    """Everything the fake upstream received, as bytes."""
    return b"\n".join(orjson.dumps(r.get("body")) for r in fake.requests)


def assert_clean(fake) -> None:
    seen = sent(fake)
    for value in (*SEEDED, PEM):
        assert value.encode() not in seen and orjson.dumps(value)[1:-1] not in seen, value


def send_tool(to_enum: str) -> list[dict]:
    return [{"type": "function", "function": {"name": "send", "parameters": {
        "type": "object", "properties": {"to": {"type": "string", "enum": [to_enum]}}, "required": ["to"]}}}]


# ---- chat completions -----------------------------------------------------------------------------

def test_chat_values_never_leave_and_come_back(gateway, fake_openai):
    protect(gateway)
    resp = gateway.sdk().chat.completions.create(
        model="test/echo", messages=[{"role": "system", "content": f"The user is {EMAIL}."},
                                     {"role": "user", "content": [{"type": "text", "text": PROMPT}]}])
    assert_clean(fake_openai)
    upstream = fake_openai.requests[-1]["body"]
    assert upstream["messages"][0]["content"] == "The user is [EMAIL_1]."
    assert "[PHONE_1]" in upstream["messages"][1]["content"][0]["text"]
    echoed = resp.choices[0].message.content  # the echo of what the upstream got, values restored
    for value in SEEDED:
        assert value in echoed


def test_chat_stream_restores(gateway, fake_openai):
    protect(gateway)
    out = assemble(gateway.sdk().chat.completions.create(
        model="test/echo", stream=True, messages=[{"role": "user", "content": PROMPT}]))
    assert_clean(fake_openai)
    for value in SEEDED:
        assert value in out.text


@pytest.mark.parametrize("stream", [False, True])
def test_chat_tool_call_arguments_are_restored_json_escaped(gateway, fake_openai, stream):
    """The model answers with a placeholder in tool arguments (split over 5-character stream
    chunks); the client gets the value back, JSON-escaped (the key holds newlines)."""
    protect(gateway)
    messages = [{"role": "user", "content": f"Store this key for me:\n{PEM}\nthanks"}]
    call = gateway.sdk().chat.completions.create(model="test/fake-tool", messages=messages,
                                                 tools=send_tool("[PRIVATE_KEY_1]"), stream=stream)
    if stream:
        args = assemble(call).calls[0]["args"]
    else:
        args = call.choices[0].message.tool_calls[0].function.arguments
    assert json.loads(args) == {"to": PEM}
    assert_clean(fake_openai)


def test_chat_tool_history_and_results_are_redacted(gateway, fake_openai):
    protect(gateway)
    messages = [
        {"role": "user", "content": "who is on call?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "lookup", "arguments": json.dumps({"who": EMAIL, "phone": PHONE})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": f"on call: {EMAIL}"},
    ]
    resp = gateway.sdk().chat.completions.create(model="test/fake-tool", messages=messages,
                                                 tools=send_tool("x"))
    assert_clean(fake_openai)
    upstream = fake_openai.requests[-1]["body"]["messages"]
    assert json.loads(upstream[1]["tool_calls"][0]["function"]["arguments"]) == {"who": "[EMAIL_1]",
                                                                                "phone": "[PHONE_1]"}
    assert upstream[2]["content"] == "on call: [EMAIL_1]"
    assert resp.choices[0].message.content == f"Tool result: on call: {EMAIL}"


def test_same_value_same_placeholder_across_resent_history(gateway, fake_openai):
    protect(gateway)
    other = "bob@example.org"
    first = [{"role": "user", "content": f"mail {EMAIL}"}]
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=first)
    again = first + [{"role": "assistant", "content": f"ok, {EMAIL}"}, {"role": "user", "content": f"and {other}"}]
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=again)
    upstream = fake_openai.requests[-1]["body"]["messages"]
    assert [m["content"] for m in upstream] == ["mail [EMAIL_1]", "ok, [EMAIL_1]", "and [EMAIL_2]"]


def test_a_literal_placeholder_in_the_prompt_is_never_swapped_for_a_value(gateway, fake_openai):
    protect(gateway)
    resp = gateway.sdk().chat.completions.create(
        model="test/echo", messages=[{"role": "user", "content": f"template [EMAIL_1]; real {EMAIL}"}])
    upstream = fake_openai.requests[-1]["body"]["messages"][0]["content"]
    assert upstream == "template [EMAIL_1]; real [EMAIL_2]"
    assert "template [EMAIL_1]; real " + EMAIL in resp.choices[0].message.content


def test_other_parameters_pass_through_unchanged(gateway, fake_openai):
    protect(gateway)
    gateway.sdk().chat.completions.create(
        model="test/fake-gpt", messages=[{"role": "user", "content": f"hi {EMAIL}"}], temperature=0.3,
        max_tokens=50, extra_body={"metadata": {"note": "keep me"}, "user": "u-42"})
    body = fake_openai.requests[-1]["body"]
    assert body["temperature"] == 0.3 and body["max_tokens"] == 50 and body["user"] == "u-42"
    assert body["metadata"] == {"note": "keep me"}


def test_embeddings_input_is_redacted(gateway, fake_openai):
    protect(gateway)
    gateway.sdk().embeddings.create(model="test/embed", input=[f"profile of {EMAIL}", "plain"])
    assert fake_openai.requests[-1]["body"]["input"] == ["profile of [EMAIL_1]", "plain"]


# ---- actions ----------------------------------------------------------------------------------------

def test_block_refuses_in_the_openai_dialect(gateway, fake_openai):
    protect(gateway, rules={"email": "block", "phone": "redact"})
    before = chat_calls(fake_openai)
    with pytest.raises(openai.BadRequestError) as e:
        gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=[{"role": "user", "content": PROMPT}])
    assert e.value.status_code == 400
    assert e.value.body["code"] == "dlp_blocked" and "'email'" in e.value.body["message"]
    assert chat_calls(fake_openai) == before


def test_mask_is_not_restored(gateway, fake_openai):
    protect(gateway, rules={"email": "mask"})
    resp = gateway.sdk().chat.completions.create(model="test/echo", messages=[{"role": "user", "content": PROMPT}])
    assert EMAIL.encode() not in sent(fake_openai)
    assert "[EMAIL_1]" in resp.choices[0].message.content and EMAIL not in resp.choices[0].message.content
    assert PHONE.encode() in sent(fake_openai)  # not enabled: sent as is


def test_log_sends_as_is_and_records(gateway, fake_openai):
    protect(gateway, rules={"email": "log"})
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=[{"role": "user", "content": PROMPT}])
    assert EMAIL.encode() in sent(fake_openai)
    gateway.flush()
    with db.session_scope() as s:
        rows = s.query(DlpEvent).all()
    assert [(r.rule, r.action, r.matches) for r in rows] == [("email", "log", 1)]
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=[
        {"role": "user", "content": f"{EMAIL} and bob@example.org"}])
    gateway.flush()
    with db.session_scope() as s:
        rollups = [(r.rule, r.action, r.requests, r.matches) for r in s.query(DlpRollup).all()]
    assert rollups == [("email", "log", 2, 3)]  # per rule per day


def test_detector_failure_refuses_the_request(gateway, fake_openai, monkeypatch):
    from gateway.dlp import detectors

    protect(gateway)

    def broken(text, _ctx=None):
        raise RuntimeError("detector bug " + text)

    monkeypatch.setitem(detectors.DETECTORS, "email", broken)
    before = chat_calls(fake_openai)
    with pytest.raises(openai.APIStatusError) as e:
        gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=[{"role": "user", "content": PROMPT}])
    assert e.value.status_code == 503 and e.value.body["code"] == "dlp_unavailable"
    assert chat_calls(fake_openai) == before


def test_a_request_header_cannot_turn_protection_off(gateway, fake_openai):
    protect(gateway)
    gateway.sdk().chat.completions.create(
        model="test/fake-gpt", messages=[{"role": "user", "content": PROMPT}],
        extra_headers={"x-gateway-dlp": "off", "x-gateway-cache": "bypass"})
    assert_clean(fake_openai)


# ---- Anthropic messages -----------------------------------------------------------------------------

def claude(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=gw.api_key, max_retries=0)


@pytest.mark.parametrize("stream", [False, True])
def test_messages_echo_restored(gateway, fake_anthropic, stream):
    protect(gateway)
    kw = dict(model="anthropic-test/echo", max_tokens=500, system=f"Customer: {EMAIL}",
              messages=[{"role": "user", "content": [{"type": "text", "text": PROMPT}]}])
    if stream:
        with claude(gateway).messages.stream(**kw) as s:
            text = "".join(s.text_stream)
    else:
        text = claude(gateway).messages.create(**kw).content[0].text
    assert_clean(fake_anthropic)
    assert fake_anthropic.requests[-1]["body"]["system"] == "Customer: [EMAIL_1]"
    for value in SEEDED:
        assert value in text


@pytest.mark.parametrize("stream", [False, True])
def test_messages_tool_use_input_restored(gateway, fake_anthropic, stream):
    protect(gateway)
    tools = [{"name": "send", "input_schema": {"type": "object", "properties": {
        "to": {"type": "string", "enum": ["[PRIVATE_KEY_1]"]}}}}]
    kw = dict(model="anthropic-test/claude-tool", max_tokens=500, tools=tools,
              messages=[{"role": "user", "content": f"keep\n{PEM}"}])
    if stream:
        with claude(gateway).messages.stream(**kw) as s:
            message = s.get_final_message()
    else:
        message = claude(gateway).messages.create(**kw)
    use = next(b for b in message.content if b.type == "tool_use")
    assert use.input == {"to": PEM}
    assert_clean(fake_anthropic)


def test_messages_tool_result_redacted_and_answer_restored(gateway, fake_anthropic):
    protect(gateway)
    message = claude(gateway).messages.create(
        model="anthropic-test/claude-tool", max_tokens=500, tools=[{"name": "lookup", "input_schema": {
            "type": "object", "properties": {}}}],
        messages=[{"role": "user", "content": "who?"},
                  {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup",
                                                     "input": {"email": EMAIL}}]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                                "content": [{"type": "text", "text": f"owner {EMAIL}"}]}]}])
    assert_clean(fake_anthropic)
    assert message.content[0].text == f"Tool result: owner {EMAIL}"


def test_block_refuses_in_the_anthropic_dialect(gateway, fake_anthropic):
    protect(gateway, rules={"card": "block"})
    with pytest.raises(anthropic.BadRequestError) as e:
        claude(gateway).messages.create(model="anthropic-test/claude-fake", max_tokens=50,
                                        messages=[{"role": "user", "content": PROMPT}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "invalid_request_error"
    assert "'card'" in e.value.body["error"]["message"]
    assert not fake_anthropic.requests


# ---- Responses --------------------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_responses_echo_restored(gateway, fake_openai, stream):
    protect(gateway)
    sdk = gateway.sdk()
    kw = dict(model="test/echo", instructions=f"Owner {EMAIL}", input=PROMPT)
    if stream:
        text = "".join(e.delta for e in sdk.responses.create(stream=True, **kw)
                       if e.type == "response.output_text.delta")
    else:
        text = sdk.responses.create(**kw).output_text
    assert_clean(fake_openai)
    for value in SEEDED:
        assert value in text


@pytest.mark.parametrize("stream", [False, True])
def test_responses_function_call_arguments_restored(gateway, fake_openai, stream):
    protect(gateway)
    sdk = gateway.sdk()
    tools = [{"type": "function", "name": "send", "parameters": {
        "type": "object", "properties": {"to": {"type": "string", "enum": ["[EMAIL_1]"]}}}}]
    kw = dict(model="test/fake-tool", input=f"send to {EMAIL}", tools=tools)
    if stream:
        args = "".join(e.delta for e in sdk.responses.create(stream=True, **kw)
                       if e.type == "response.function_call_arguments.delta")
    else:
        args = next(i for i in sdk.responses.create(**kw).output if i.type == "function_call").arguments
    assert json.loads(args) == {"to": EMAIL}
    assert_clean(fake_openai)


# ---- caches, storage, logs --------------------------------------------------------------------------

def test_exact_cache_keys_on_placeholders_and_each_caller_gets_their_own_value(gateway, fake_openai):
    """Two identical questions about different emails share the cached placeholder answer; each
    caller sees its own value, never the other's."""
    protect(gateway)
    sdk = gateway.sdk()
    ask = lambda who: sdk.chat.completions.create(  # noqa: E731
        model="test/echo", temperature=0, messages=[{"role": "user", "content": f"who is {who}?"}])
    first = ask(EMAIL).choices[0].message.content
    calls = chat_calls(fake_openai)
    second = ask("zed@example.net")
    assert chat_calls(fake_openai) == calls  # served from the cache
    assert "zed@example.net" in second.choices[0].message.content and EMAIL not in second.choices[0].message.content
    assert EMAIL in first


def test_no_seeded_value_in_database_logs_or_caches(gateway, fake_openai, caplog):
    from gateway.stores.exact_cache import STORE

    protect(gateway, rules={"email": "redact", "phone": "mask", "card": "log", "api_key": "redact",
                            "private_key": "block"})
    sdk = gateway.sdk()
    for stream in (False, True):
        r = sdk.chat.completions.create(model="test/echo", temperature=0, stream=stream,
                                        messages=[{"role": "user", "content": f"{EMAIL} {PHONE} {KEY}"}])
        if stream:
            assemble(r)
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="test/fake-gpt", messages=[{"role": "user", "content": PEM}])
    gateway.flush()
    with db.session_scope() as s:
        assert {e.rule for e in s.query(DlpEvent).all()} == {"email", "phone", "api_key", "private_key"}
    stored = b""
    for path in gateway.instance.glob("gateway.db*"):
        stored += path.read_bytes()
    cached = repr(STORE._scopes).encode()
    assert b"[EMAIL_1]" in cached
    logs = caplog.text.encode()
    for value in (EMAIL, PHONE, KEY, PEM, PEM.splitlines()[1]):
        for where in (stored, cached, logs):
            assert value.encode() not in where, value


# ---- scope, CLI, tenancy ----------------------------------------------------------------------------

def test_cli_enable_reaches_the_running_server_and_status_lists_it(gateway, fake_openai):
    out = gateway.cli("dlp", "enable", "--org", "default", "--rule", "email", "--rule", "phone:mask").stdout
    assert "email:redact" in out and "phone:mask" in out

    def redacted():
        gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=[{"role": "user", "content": PROMPT}])
        return b"[EMAIL_1]" in orjson.dumps(fake_openai.requests[-1]["body"])

    wait_for(redacted, timeout=5)
    status = gateway.cli("dlp", "status").stdout
    assert "org default\ton" in status and "email:redact" in status
    gateway.cli("dlp", "disable", "--org", "default")
    wait_for(lambda: not redacted(), timeout=5)
    bad = gateway.cli("dlp", "enable", "--org", "default", "--rule", "email:shred", check=False)
    assert bad.returncode != 0 and "Unknown action" in bad.stderr
    bad = gateway.cli("dlp", "enable", "--org", "default", "--phone-region", "QQ", check=False)
    assert bad.returncode != 0 and "Unknown phone region QQ" in bad.stderr
    both = gateway.cli("dlp", "enable", "--org", "default", "--app", "web", check=False)
    assert both.returncode != 0 and "exactly one" in both.stderr


def test_phone_regions_decide_which_national_formats_count(gateway, fake_openai):
    gateway.cli("dlp", "enable", "--org", "default", "--rule", "phone", "--phone-region", "FR")
    gateway.flush()
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=[
        {"role": "user", "content": "fr 01 23 45 67 89, us (415) 555-2671, intl +1 415 555 2671"}])
    assert fake_openai.requests[-1]["body"]["messages"][0]["content"] == (
        "fr [PHONE_1], us (415) 555-2671, intl [PHONE_2]")


def test_app_keys_follow_their_app(gateway, fake_openai):
    with db.write_lock, db.session_scope() as s:
        org = tenancy.org_by_name(s, "default")
        app = App(org_id=org.id, name="web", slug="web")  # apps are named by slug on the CLI
        s.add(app)
        s.flush()
        app_key = tenancy.create_key(s, org, name="app", app_id=app.id, actor="test").secret
    gateway.flush()
    gateway.cli("dlp", "enable", "--app", "web", "--rule", "email")
    gateway.flush()
    ask = lambda key: gateway.sdk(key).chat.completions.create(  # noqa: E731
        model="test/fake-gpt", messages=[{"role": "user", "content": PROMPT}])
    ask(app_key)
    assert b"[EMAIL_1]" in orjson.dumps(fake_openai.requests[-1]["body"])
    ask(gateway.api_key)  # the org itself has no protection
    assert EMAIL.encode() in orjson.dumps(fake_openai.requests[-1]["body"])
    # an app turned off does not follow its org; turned on again without rules, it gets the defaults
    protect(gateway)
    gateway.cli("dlp", "disable", "--app", "web")
    gateway.flush()
    ask(app_key)
    assert EMAIL.encode() in orjson.dumps(fake_openai.requests[-1]["body"])
    assert "(follows org)" not in gateway.cli("dlp", "status").stdout
    assert gateway.cli("dlp", "enable", "--app", "web").stdout.endswith("email:redact\n")  # its rules kept
    with db.write_lock, db.session_scope() as s:
        s.add(App(org_id=tenancy.org_by_name(s, "default").id, name="mobile", slug="mobile"))
    gateway.cli("dlp", "disable", "--app", "mobile")  # off before it ever had rules
    out = gateway.cli("dlp", "enable", "--app", "mobile").stdout
    assert "email:redact" in out and "iban:redact" in out and "private_key:redact" in out


def test_org_settings_and_activity_are_not_visible_to_another_org(gateway, fake_openai):
    gateway.new_org("beta")
    beta_key = gateway.new_key("beta")
    protect(gateway)  # default only
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=[{"role": "user", "content": PROMPT}])
    gateway.sdk(beta_key).chat.completions.create(model="test/fake-gpt", messages=[{"role": "user", "content": PROMPT}])
    assert EMAIL.encode() in orjson.dumps(fake_openai.requests[-1]["body"])  # beta: not protected
    gateway.flush()

    class BetaAdmin:
        email, is_superadmin = "admin@beta", False

    with db.session_scope() as s:
        BetaAdmin.org_id = tenancy.org_by_name(s, "beta").id
        default_id = tenancy.org_by_name(s, "default").id
        assert [x.org_name for x in dlp_service.status(s, BetaAdmin)] == ["beta"]
        assert dlp_service.recent_activity(s, BetaAdmin) == []
        assert dlp_service.rollups(s, BetaAdmin) == []
        assert dlp_service.recent_activity(s, dlp_service.CLI)
    with pytest.raises(Forbidden), db.write_lock, db.session_scope() as s:
        dlp_service.enable(s, BetaAdmin, default_id)


def test_concurrent_requests_keep_their_own_values(gateway, fake_openai):
    """Twenty requests at once, each with its own email: each answer holds its own value only."""
    from concurrent.futures import ThreadPoolExecutor

    protect(gateway)
    sdk = gateway.sdk()

    def ask(i: int) -> tuple[int, str]:
        stream = sdk.chat.completions.create(model="test/echo", stream=bool(i % 2),
                                             messages=[{"role": "user", "content": f"who is user{i}@example.com?"}])
        return i, assemble(stream).text if i % 2 else stream.choices[0].message.content

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(ask, range(20)))
    for i, text in answers:
        assert f"user{i}@example.com" in text
        assert [j for j in range(20) if j != i and f"user{j}@example.com" in text] == []
    assert b"@example.com" not in sent(fake_openai)


def test_semantic_cache_stores_and_matches_the_placeholder_form(gateway, fake_openai):
    """The semantic cache sees only placeholders: a question about another email is the same
    question, served from the cache with the asker's own value; the index holds no value."""
    from gateway.pipeline.savings import semantic_cache
    from gateway.stores.semantic_index import INDEX
    from tests.conftest import configure_savings

    configure_savings(gateway, semantic_cache={"enabled": True}, exact_cache={"enabled": False})
    protect(gateway)
    ask = lambda who: gateway.sdk().chat.completions.with_raw_response.create(  # noqa: E731
        model="test/echo", temperature=0, messages=[{"role": "user", "content": f"What is the role of {who}?"}])
    first = ask(EMAIL).parse().choices[0].message.content
    semantic_cache.settle()
    calls = chat_calls(fake_openai)
    raw = ask("zed@example.net")
    second = raw.parse().choices[0].message.content
    assert raw.headers["x-gateway-cache"] == "semantic" and chat_calls(fake_openai) == calls
    assert EMAIL in first and "zed@example.net" in second and EMAIL not in second
    gateway.flush()
    entries = [e for part in INDEX._parts.values() for e in part.entries]
    assert [e.text for e in entries] == ["What is the role of [EMAIL_1]?"]
    stored = repr(entries).encode() + b"".join(p.read_bytes() for p in gateway.instance.glob("gateway.db*"))
    assert b"[EMAIL_1]" in stored
    assert EMAIL.encode() not in stored and b"zed@example.net" not in stored


def test_in_flight_dedupe_joins_on_the_placeholder_form(gateway, fake_openai):
    """Two callers asking the same question about different emails at the same moment: one upstream
    call (the key is the placeholder form), and the upstream never sees either value."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import configure_savings

    configure_savings(gateway, exact_cache={"enabled": False})
    protect(gateway)
    before = chat_calls(fake_openai)
    ask = lambda who: gateway.sdk().chat.completions.create(  # noqa: E731
        model="test/slow-1000", temperature=0, messages=[{"role": "user", "content": f"Status of {who}?"}])
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(ask, [EMAIL, "zed@example.net"]))
    assert chat_calls(fake_openai) == before + 1
    assert [a.choices[0].message.content for a in answers] == ["Hello from fake slow-1000."] * 2
    assert EMAIL.encode() not in sent(fake_openai) and b"zed@example.net" not in sent(fake_openai)


def test_no_database_statement_on_the_request_path(gateway, fake_openai):
    """Policy from memory, activity queued for the writer: a protected request runs no SQL."""
    from tests.conftest import database_statements

    protect(gateway)
    with database_statements() as statements:
        gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=[{"role": "user", "content": PROMPT}])
        assemble(gateway.sdk().chat.completions.create(model="test/echo", stream=True,
                                                       messages=[{"role": "user", "content": PROMPT}]))
    assert statements == []
    gateway.flush()
    with db.session_scope() as s:
        assert s.query(DlpEvent).count() == 8  # four rules matched in each request


def test_a_large_prompt_full_of_values(gateway, fake_openai):
    protect(gateway)
    emails = [f"user{i}@example.com" for i in range(1000)]  # about 7k tokens: inside test/echo's window
    resp = gateway.sdk().chat.completions.create(model="test/echo",
                                                 messages=[{"role": "user", "content": " ".join(emails)}])
    assert b"@example.com" not in sent(fake_openai)
    assert "[EMAIL_1000]" in fake_openai.requests[-1]["body"]["messages"][0]["content"]
    assert " ".join(emails) in resp.choices[0].message.content
