"""Bad input never gets a 500: every inference route answers odd shapes (wrong types in every field,
broken messages, tools and tool choices) with a 4xx in its dialect's error shape, or serves them.
Run against a pass-through and a translated upstream, since each decodes the body differently."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

ROUTES = {
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
    "/v1/messages": {"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/messages/count_tokens": {"messages": [{"role": "user", "content": "hi"}]},
    "/v1/responses": {"input": "hi"},
    "/v1/embeddings": {"input": "hi"},
    "/api/v1/llm/chat/stream": {"messages": [{"role": "user", "content": "hi"}]},
}
WEIRD = [None, -1, 1.5, "x", "", [], {}, ["x"], [{}], [None], {"a": 1}, True, 10**30]
FIELDS = ["model", "messages", "input", "stream", "max_tokens", "max_output_tokens", "max_completion_tokens",
          "tools", "functions", "tool_choice", "temperature", "top_p", "n", "seed", "stop", "stop_sequences",
          "system", "instructions", "response_format", "text", "stream_options", "previous_response_id",
          "metadata", "provider", "thinking", "user", "store", "dimensions", "encoding_format"]
MESSAGES = (
    [[{"role": "user", "content": w}] for w in WEIRD]
    + [[{"role": r, "content": "x"}] for r in ("system", "assistant", "tool", "developer", "function", "robot")]
    + [[{"role": "user", "content": [{"type": "image_url", "image_url": w}]}] for w in WEIRD]
    + [[{"role": "user", "content": [{"type": w, "text": w}]}] for w in WEIRD]
    + [[{"role": "assistant", "content": "x", "tool_calls": w}] for w in WEIRD]
    + [[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": w, "content": w}]}] for w in WEIRD]
)
TOOLS = (
    [[w] for w in WEIRD]
    + [[{"type": "function", "function": w}] for w in WEIRD]
    + [[{"type": "function", "function": {"name": "f", "parameters": w}}] for w in WEIRD]
    + [[{"name": w, "input_schema": w}] for w in WEIRD]
)
CHOICES = WEIRD + ["auto", "required", {"type": "tool", "name": "f"}, {"type": "function", "function": "f"}]
GOOD_TOOLS = [[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
              [{"name": "f", "input_schema": {"type": "object"}}]]


def bodies(path: str, model: str) -> list:
    base = {"model": "test/embed" if path == "/v1/embeddings" else model, **ROUTES[path]}
    out: list = list(WEIRD)
    out += [{**base, field: w} for field in FIELDS for w in WEIRD]
    out += [{**base, "messages": m} for m in MESSAGES] + [{**base, "input": m} for m in MESSAGES]
    out += [{**base, "tools": t} for t in TOOLS]
    out += [{**base, "tools": t, "tool_choice": c} for t in GOOD_TOOLS for c in CHOICES]
    return out


@pytest.mark.parametrize("model", ["test/fake-tool", "anthropic-test/claude-fake"])
def test_odd_bodies_get_4xx_in_the_routes_dialect_never_500(gateway_factory, fake_anthropic, model):
    gw = gateway_factory()
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {gw.api_key}", "anthropic-version": "2023-06-01",
                            "Content-Type": "application/json"})
    cases = [(path, body) for path in ROUTES for body in bodies(path, model)]

    def answer(case):
        path, body = case
        return path, body, session.post(gw.url + path, data=json.dumps(body), timeout=30)

    failures = []
    with ThreadPoolExecutor(16) as pool:  # greenlets under gevent: the server answers them concurrently
        for path, body, r in pool.map(answer, cases):
            if r.status_code == 500 or r.status_code < 200:
                failures.append((path, body, r.status_code, r.text[:200]))
            elif r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
                err = r.json()
                shaped = (err.get("type") == "error" and "message" in err["error"]) if path.startswith("/v1/messages") \
                    else isinstance(err.get("error"), dict) and "message" in err["error"]
                if not shaped:
                    failures.append((path, body, r.status_code, r.text[:200]))
    assert failures == [], f"{len(failures)} bad answers, first: {failures[:3]}"
