"""Wire rules the client can rely on, whatever served the request.

- `model` in every reply is the slug of the catalog model that actually served (after fallback), on
  pass-through and translated, stream and not, with `x-gateway-route: provider/upstream_model` beside it.
- An OpenAI client streaming from an Anthropic-kind route gets the prompt's tokens in its usage chunk
  (message_start carries input, message_delta output: merged, not replaced).
- Read routes refuse query parameters they do not take (400 naming it), so `?from=` is never ignored.
- /favicon.ico is served, and the console's pages link it.
"""

import orjson
import pytest
import requests

from tests.conftest import start_gateway, stop_gateway
from tests.fakes.faulty_upstream import INPUT_TOKENS, OUTPUT_TOKENS

PRICES = {"input_per_mtok": 1000, "output_per_mtok": 2000}


@pytest.fixture(scope="module")
def gw(faulty_upstream, tmp_path_factory):
    url = faulty_upstream.url
    config = {
        "providers": [
            {"name": "fo", "kind": "openai", "base_url": url + "/v1", "api_key": "sk-rules", "responses_api": True},
            {"name": "fa", "kind": "anthropic", "base_url": url, "api_key": "sk-ant-rules"}],
        "models": [
            {"slug": "rule/openai", "routes": [{"provider": "fo", "upstream_model": "ok", **PRICES}]},
            {"slug": "rule/anthropic", "routes": [{"provider": "fa", "upstream_model": "ok", **PRICES}]},
            {"slug": "rule/broken", "routes": [{"provider": "fo", "upstream_model": "status-500", **PRICES}]},
            {"slug": "rule/backup", "routes": [{"provider": "fa", "upstream_model": "ok", **PRICES}]},
        ],
        "aliases": {"rule-alias": "rule/openai"},
        "fallbacks": {"rule/broken": ["rule/backup"]},
        "routing": {"retries": 0},
    }
    gw, server, app = start_gateway(tmp_path_factory.mktemp("rules"), config)
    yield gw
    stop_gateway(server, app)


def post(gw, path: str, body: dict, **kw) -> requests.Response:
    return requests.post(gw.url + path, json=body, timeout=30, headers={
        "Authorization": f"Bearer {gw.api_key}", "anthropic-version": "2023-06-01"}, **kw)


def body_for(endpoint: str, model: str, stream: bool) -> tuple[str, dict]:
    if endpoint == "chat":
        return "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}],
                                        "stream": stream}
    if endpoint == "messages":
        return "/v1/messages", {"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}],
                                "stream": stream}
    return "/v1/responses", {"model": model, "input": "hi", "stream": stream}


def models_named(payload: bytes, stream: bool) -> list[str]:
    """Every `model` the client reads: the body's, or each stream event's (nested ones included)."""
    if not stream:
        return [orjson.loads(payload)["model"]]
    found = []
    for block in payload.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
                obj = orjson.loads(line[5:].strip())
                for holder in (obj, obj.get("message"), obj.get("response")):
                    if isinstance(holder, dict) and "model" in holder:
                        found.append(holder["model"])
    return found


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("endpoint", ["chat", "messages", "responses"])
@pytest.mark.parametrize("model,route", [
    ("rule/openai", "fo/ok"), ("rule/anthropic", "fa/ok"),  # pass-through or translated, by endpoint
    ("rule/broken", "fa/ok"),  # its route fails: the fallback model answers, and says so
    ("rule-alias", "fo/ok"),  # an alias answers with the slug it resolved to
])
def test_model_is_the_slug_that_served(gw, endpoint, stream, model, route):
    path, body = body_for(endpoint, model, stream)
    r = post(gw, path, body)
    assert r.status_code == 200, r.text[:300]
    served = {"rule/broken": "rule/backup", "rule-alias": "rule/openai"}.get(model, model)
    named = models_named(r.content, stream)
    assert named and set(named) == {served}
    assert r.headers["x-gateway-route"] == route


def test_openai_stream_from_an_anthropic_route_reports_prompt_tokens(gw):
    """The failure once seen: prompt_tokens 0 in the final usage chunk (the last usage event replaced the rest)."""
    r = post(gw, "/v1/chat/completions", {"model": "rule/anthropic", "messages": [{"role": "user", "content": "hi"}],
                                          "stream": True, "stream_options": {"include_usage": True}})
    usage = [orjson.loads(line[5:]) for line in r.content.split(b"\n") if line.startswith(b"data: {")][-1]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (INPUT_TOKENS, OUTPUT_TOKENS)
    assert usage["total_tokens"] == INPUT_TOKENS + OUTPUT_TOKENS


@pytest.mark.parametrize("url,param", [
    ("/v1/usage/summary?from=2025-01-01&to=2025-01-02", "from"),
    ("/v1/usage/summary?start=2025-01-01&to=2025-01-02", "to"),
    ("/v1/models?limit=5", "limit"),
    ("/v1/models/rule/openai?verbose=1", "verbose"),
    ("/v1/providers?all=1", "all"),
    ("/v1/responses/resp_x?include=usage", "include"),
    ("/healthz?x=1", "x"),
])
def test_read_routes_refuse_unknown_query_parameters(gw, url, param):
    r = requests.get(gw.url + url, headers={"Authorization": f"Bearer {gw.api_key}"}, timeout=10)
    assert r.status_code == 400
    err = r.json()["error"]
    assert (err["type"], err["param"]) == ("invalid_request_error", param)
    assert param in err["message"]


def test_read_routes_take_their_own_parameters(gw):
    headers = {"Authorization": f"Bearer {gw.api_key}"}
    r = requests.get(gw.url + "/v1/usage/summary?start=2025-01-01&end=2025-01-02&model=rule/openai",
                     headers=headers, timeout=10)
    assert r.status_code == 200
    assert r.json()["start"].startswith("2025-01-01") and r.json()["model"] == "rule/openai"
    assert requests.get(gw.url + "/v1/models", headers=headers, timeout=10).status_code == 200


def test_favicon_is_served_and_linked(gw):
    r = requests.get(gw.url + "/favicon.ico", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/x-icon"
    assert r.content[:4] == b"\x00\x00\x01\x00"  # an ICO file
    page = requests.get(gw.url + "/admin/login", timeout=10)
    assert page.status_code == 200 and 'rel="icon" href="/favicon.ico"' in page.text


# ---- an upstream answer of the wrong shape: the adapter's "invalid response" (502), never a 500 ----------

ODD = [None, "lots", [1], {"a": 1}, 1.5, -1, True, 10**30, [None], ["x"], [{}], [{"type": "text", "text": 5}],
       [{"type": "tool_use", "id": 1, "name": [1], "input": "x"}], [{"type": "thinking", "thinking": [1]}]]
MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "stop_sequence": None,
           "content": [{"type": "text", "text": "hi"}, {"type": "tool_use", "id": "t", "name": "f", "input": {}}],
           "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}}
COMPLETION = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "finish_reason": "stop", "message": {
                  "role": "assistant", "content": "hi",
                  "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
              "usage": {"prompt_tokens": 1, "completion_tokens": 1}}


def _paths(obj, prefix=()):
    yield prefix
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        yield from _paths(value, (*prefix, key))


@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
def test_an_upstream_answer_of_the_wrong_shape_decodes_or_raises_what_adapters_catch(dialect):
    """Adapters turn TypeError/AttributeError from decoding into a 502; anything else, or a decoded answer
    that an encoder then fails on, was a 500 (an `id` that is a number, text that is a list)."""
    import copy

    from gateway.wire import anthropic_messages, openai_chat, openai_responses

    base, decode = (MESSAGE, anthropic_messages.decode_response) if dialect == "anthropic" else \
        (COMPLETION, openai_chat.decode_response)
    encoders = [lambda r: openai_chat.render(r, "slug", {}), lambda r: anthropic_messages.render(r, "slug", {}),
                lambda r: openai_responses.encode_response(r, "slug", {"input": "hi"})]
    for path in [p for p in _paths(base) if p]:
        for odd in ODD:
            body = copy.deepcopy(base)
            holder = body
            for key in path[:-1]:
                holder = holder[key]
            holder[path[-1]] = odd
            try:
                resp = decode(body)
            except (TypeError, AttributeError):
                continue
            for encode in encoders:
                encode(resp)  # raises here if the decoded answer cannot be rendered
