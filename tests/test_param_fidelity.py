"""A rewritten request keeps every client parameter: for each layer that rewrites a request
(compression, context dedupe, output budget, prompt cache, dlp; Responses history) and each
dialect (OpenAI chat completions, Anthropic messages, Responses), a body carrying every documented
parameter of its API plus an unknown one is sent through the official SDK; the fake upstream
records what it received, and every key the layer does not own arrives with the same JSON value.

The documented parameters: OpenAI's from the vendored OpenAPI spec (CreateChatCompletionRequest,
CreateResponse); Anthropic's Messages parameters as its API reference lists them, checked against
the installed SDK's MessageCreateParams so a new documented parameter fails here until covered.
"""

from __future__ import annotations

import functools

import anthropic
import orjson
import pytest
import yaml

from tests.conftest import configure_savings
from tests.openapi import SPEC
from tests.test_dlp import EMAIL, protect

UNKNOWN = {"x_vendor_extension": {"nested": [1, 2.5, None, "three"], "flag": True}}

# One valid value per documented CreateChatCompletionRequest property (but model, messages and
# the stream pair, which the test sets), as the spec describes them.
CHAT_PARAMS = {
    "audio": {"voice": "alloy", "format": "mp3"},
    "frequency_penalty": 0.5,
    "function_call": "auto",
    "functions": [{"name": "legacy_lookup", "description": "Old style.",
                   "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}],
    "logit_bias": {"50256": -100, "1734": 5},
    "logprobs": True,
    "max_completion_tokens": 777,
    "max_tokens": 666,
    "metadata": {"team": "search", "ticket": "T-1"},
    "modalities": ["text"],
    "moderation": {"model": "omni-moderation-latest"},
    "n": 1,
    "parallel_tool_calls": False,
    "prediction": {"type": "content", "content": "The revenue was"},
    "presence_penalty": -0.25,
    "prompt_cache_key": "client-key-1",
    "prompt_cache_options": {},
    "prompt_cache_retention": "24h",
    "reasoning_effort": "low",
    "response_format": {"type": "json_schema", "json_schema": {
        "name": "answer", "strict": True,
        "schema": {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
                   "additionalProperties": False}}},
    "safety_identifier": "user-hash-42",
    "seed": 1234,
    "service_tier": "flex",
    "stop": ["\n\nEND", "STOP"],
    "store": True,
    "temperature": 0.3,
    "tool_choice": "auto",
    "tools": [{"type": "function", "function": {
        "name": "lookup", "description": "Look a fact up.", "strict": False,
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}],
    "top_logprobs": 3,
    "top_p": 0.9,
    "user": "end-user-7",
    "verbosity": "low",
    "web_search_options": {"search_context_size": "low"},
}

# Anthropic Messages parameters (the API reference's list), but model, messages and stream.
MESSAGES_PARAMS = {
    "max_tokens": 2048,
    "system": [{"type": "text", "text": "You answer questions about documents."}],
    "metadata": {"user_id": "user-42"},
    "stop_sequences": ["\n\nEND"],
    "temperature": 0.3,
    "top_p": 0.9,
    "top_k": 40,
    "tools": [{"name": "lookup", "description": "Look a fact up.",
               "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}},
              {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "service_tier": "standard_only",
    "container": "container_011CQ",
    "mcp_servers": [{"type": "url", "url": "https://mcp.example.com/sse", "name": "example"}],
    "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
    "inference_geo": "us",
    "output_config": {"effort": "high"},
    "cache_control": {"type": "ephemeral"},
    "speed": "standard",
    "diagnostics": {"previous_message_id": None},
}
MESSAGES_HEADERS = {"user_profile_id", "workspace_id"}  # the SDK sends these as headers, not body

# Responses parameters, but model, input, stream, previous_response_id (the responses stage owns
# it: the conversation goes upstream as input when the upstream does not hold it).
RESPONSES_PARAMS = {
    "background": False,
    "context_management": [{"type": "compaction", "compact_threshold": 200000}],
    "conversation": None,
    "include": ["message.output_text.logprobs"],
    "instructions": "Answer briefly.",
    "max_output_tokens": 555,
    "max_tool_calls": 3,
    "metadata": {"team": "search"},
    "moderation": {"model": "omni-moderation-latest"},
    "parallel_tool_calls": False,
    "prompt": {"id": "pmpt_123", "version": "2", "variables": {"city": "Lisbon"}},
    "prompt_cache_key": "client-key-2",
    "prompt_cache_options": {},
    "prompt_cache_retention": "in_memory",
    "reasoning": {"effort": "low", "summary": "auto"},
    "safety_identifier": "user-hash-42",
    "service_tier": "priority",
    "store": True,
    "temperature": 0.4,
    "text": {"format": {"type": "text"}, "verbosity": "low"},
    "tool_choice": "auto",
    "tools": [{"type": "function", "name": "lookup", "description": "Look a fact up.",
               "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}, "strict": False}],
    "top_logprobs": 2,
    "top_p": 0.8,
    "truncation": "disabled",
    "user": "end-user-7",
}
# Documented, and outside what this test sends: stream_options needs stream; previous_response_id
# is owned by the responses stage (test_responses_history_keeps_every_other_parameter sends it).
RESPONSES_OWNED = {"model", "input", "stream", "stream_options", "previous_response_id"}

DOC = ("The quarterly report shows revenue of 4.2 million, up eleven percent year over year, driven by "
       "the enterprise tier. Churn fell to 2.1 percent. Operating costs rose with the new data centre in "
       "Frankfurt, which opens in March and will host every European customer by the end of the year.")

LAYERS = {  # the savings settings that make each layer rewrite; dedupe on makes the request "changed"
    "compression": {"compression": {"enabled": True, "budget_tokens": 300, "keep_last_turns": 2}},
    "context_dedupe": {"context_dedupe": {"enabled": True}},
    "output_budget": {"output_budget": {"enabled": True, "default_max_tokens": 300},
                      "context_dedupe": {"enabled": True}},
    "prompt_cache": {"prompt_cache": {"enabled": True, "min_tokens": 1}, "context_dedupe": {"enabled": True}},
    "dlp": {"context_dedupe": {"enabled": True}},
}


@functools.cache
def spec_properties(name: str) -> frozenset[str]:
    schemas = yaml.load(SPEC.read_text(), Loader=yaml.CSafeLoader)["components"]["schemas"]

    def props(schema_name: str) -> dict:
        schema, out = schemas[schema_name], {}
        for part in schema.get("allOf", [schema]):
            if "$ref" in part:
                out.update(props(part["$ref"].rsplit("/", 1)[-1]))
            else:
                out.update(part.get("properties", {}))
        return out

    return frozenset(props(name))


def filler(tag: str, n: int = 40) -> str:
    return " ".join(f"{tag}-{i}" for i in range(n))


def turns(nonce: str) -> list[dict]:
    """A conversation long enough to compress, a document pasted twice, an email to redact."""
    out = [{"role": "user", "content": f"Here is the report:\n\n{DOC}\n\nWhat was the revenue? {nonce}"}]
    for i in range(1, 8):
        out.append({"role": "assistant", "content": f"answer {i} " + filler(f"a{i}")})
        out.append({"role": "user", "content": f"question {i} " + filler(f"q{i}")})
    out.append({"role": "assistant", "content": "Revenue was 4.2 million."})
    out.append({"role": "user", "content": f"Again, the report:\n\n{DOC}\n\nMail the summary to {EMAIL}."})
    return out


def acted(layer: str, sent: list[dict], upstream: dict, cap_key: str) -> None:
    """The layer really rewrote something (else the test would prove nothing)."""
    text = orjson.dumps(upstream["messages"]).decode()
    if layer == "compression":
        assert len(upstream["messages"]) < len(sent)
    elif layer == "context_dedupe":
        assert "[same text as" in text
    elif layer == "output_budget":
        assert upstream[cap_key] == 300
    elif layer == "dlp":
        assert EMAIL not in text and "[same text as" in text
    else:
        assert "[same text as" in text  # prompt cache: the request was rewritten by dedupe too


def assert_kept(sent: dict, upstream: dict, owned: set[str], added: set[str] = frozenset()) -> None:
    """Every key of `sent` but the owned ones reached upstream with the same JSON value, and the
    upstream got no key the client did not send (but `added`)."""
    for key, value in sent.items():
        if key in owned:
            continue
        assert key in upstream, f"{key} was dropped"
        assert orjson.dumps(upstream[key]) == orjson.dumps(value), f"{key} changed: {upstream[key]!r}"
    assert set(upstream) - set(sent) <= set(added), set(upstream) - set(sent)


def split(sdk_method, params: dict) -> tuple[dict, dict]:
    """(keyword arguments the SDK method names, the rest for extra_body)."""
    import inspect

    named = set(inspect.signature(sdk_method).parameters)
    return ({k: v for k, v in params.items() if k in named},
            {k: v for k, v in params.items() if k not in named})


def setup_layer(gw, layer: str) -> None:
    configure_savings(gw, **LAYERS[layer])
    if layer == "dlp":
        protect(gw)


# ---- coverage of the documented parameters --------------------------------------------------------

def test_the_bodies_carry_every_documented_parameter():
    assert spec_properties("CreateChatCompletionRequest") - {"model", "messages", "stream", "stream_options"} \
        <= set(CHAT_PARAMS)
    assert spec_properties("CreateResponse") - RESPONSES_OWNED <= set(RESPONSES_PARAMS)
    from anthropic.types.message_create_params import MessageCreateParamsBase

    documented = set(MessageCreateParamsBase.__annotations__) - {"model", "messages"} - MESSAGES_HEADERS
    assert documented <= set(MESSAGES_PARAMS)


# ---- OpenAI chat completions --------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_chat_rewrite_keeps_every_parameter(gateway, fake_openai, layer, stream, request):
    setup_layer(gateway, layer)
    params = dict(CHAT_PARAMS)
    if layer == "output_budget":  # the layer sets a cap only when the client named none
        del params["max_completion_tokens"], params["max_tokens"]
    params["stream"] = stream
    if stream:
        params["stream_options"] = {"include_usage": True}
    messages = [{"role": "system", "content": "You answer questions about documents."},
                *turns(request.node.name)]
    sdk = gateway.sdk()
    named, extra = split(sdk.chat.completions.create, params)
    before = len(fake_openai.requests)
    result = sdk.chat.completions.create(model="test/echo", messages=messages, extra_body={**extra, **UNKNOWN},
                                         **named)
    if stream:
        for _ in result:
            pass
    (upstream,) = [r["body"] for r in fake_openai.requests[before:] if r["path"] == "/v1/chat/completions"]
    sent = {"model": "test/echo", "messages": messages, **params, **UNKNOWN}
    acted(layer, messages, upstream, "max_completion_tokens")
    added = {"max_completion_tokens"} if layer == "output_budget" else set()
    assert_kept(sent, upstream, owned={"model", "messages"}, added=added)
    assert "max_tokens" in upstream or layer == "output_budget"
    assert upstream["messages"][0] == messages[0]  # untouched messages are the client's own JSON


def test_chat_untouched_messages_keep_fields_the_canonical_form_lacks(gateway, fake_openai, request):
    """A message the layer did not change goes as the client sent it (developer role, name, refusal)."""
    configure_savings(gateway, context_dedupe={"enabled": True})
    messages = [{"role": "developer", "content": "Be brief.", "name": "policy"},
                {"role": "user", "content": f"{DOC}\n\nSummarise. {request.node.name}", "name": "ana"},
                {"role": "assistant", "content": "It grew.", "refusal": None, "name": "bot"},
                {"role": "user", "content": f"{DOC}\n\nAnd the costs?"}]
    before = len(fake_openai.requests)
    gateway.sdk().chat.completions.create(model="test/echo", messages=messages)
    upstream = fake_openai.requests[before]["body"]
    assert upstream["messages"][:3] == messages[:3]
    assert "[same text as in message 2 above" in upstream["messages"][3]["content"]


# ---- Anthropic messages ---------------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_messages_rewrite_keeps_every_parameter(gateway, fake_anthropic, layer, stream, request):
    setup_layer(gateway, layer)
    params = dict(MESSAGES_PARAMS)
    messages = turns(request.node.name)
    client = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.api_key, max_retries=0)
    named, extra = split(client.messages.create, params)
    before = len(fake_anthropic.requests)
    if stream:
        with client.messages.stream(model="anthropic-test/echo", messages=messages,
                                    extra_body={**extra, **UNKNOWN}, **named) as events:
            for _ in events:
                pass
    else:
        client.messages.create(model="anthropic-test/echo", messages=messages, extra_body={**extra, **UNKNOWN},
                               **named)
    (upstream,) = [r["body"] for r in fake_anthropic.requests[before:] if r["path"] == "/v1/messages"]
    sent = {"model": "anthropic-test/echo", "messages": messages, **params, **UNKNOWN}
    if stream:
        sent["stream"] = True
    if layer != "output_budget":  # Anthropic requires max_tokens: the client's is never replaced
        acted(layer, messages, upstream, "max_tokens")
    assert_kept(sent, upstream, owned={"model", "messages"})
    if layer != "compression":  # its note joins the first user turn (Anthropic merges adjacent user turns)
        assert upstream["messages"][0] == messages[0]


# ---- the rewrite itself (pure) ---------------------------------------------------------------------------

def test_rewrite_replaces_only_what_changed():
    from gateway.wire import anthropic_messages, rewrite

    body = {"model": "m", "max_tokens": 10, "system": "Rules. " + DOC, "top_k": 3, **UNKNOWN,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "citations": None}]},
                         {"role": "assistant", "content": "hello"},
                         {"role": "user", "content": DOC}]}
    req = anthropic_messages.decode_request(body)
    out = rewrite.rewritten("messages", body, req)
    assert out == body  # nothing changed: the client's body, to the byte
    req.messages[-1].content[0].text = "[same text]"
    out = rewrite.rewritten("messages", body, req)
    assert out["messages"][:2] == body["messages"][:2]  # untouched turns keep fields the codec drops
    assert out["messages"][2] == {"role": "user", "content": [{"type": "text", "text": "[same text]"}]}
    assert out["system"] == body["system"] and out["top_k"] == 3 and out[next(iter(UNKNOWN))] == UNKNOWN[
        next(iter(UNKNOWN))]
    req.messages[0].content[0].text = "Rules."  # the system prompt is the layer's too
    assert rewrite.rewritten("messages", body, req)["system"] == "Rules."


def test_rewrite_when_turns_do_not_map_one_to_one():
    """Two adjacent user turns encode as one: every message is the encoded one, the rest as sent."""
    from gateway.wire import anthropic_messages, rewrite

    body = {"model": "m", "max_tokens": 10, "service_tier": "auto",
            "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": DOC}]}
    req = anthropic_messages.decode_request(body)
    req.messages[-1].content[0].text = "[same text]"
    out = rewrite.rewritten("messages", body, req)
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                            {"type": "text", "text": "[same text]"}]}]
    assert {k: v for k, v in out.items() if k != "messages"} == {k: v for k, v in body.items() if k != "messages"}
