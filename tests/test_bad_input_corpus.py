"""A corpus of hostile input over every inference route and every read route: never a 500, always the
dialect's 4xx shape, naming the field where there is one.

Inference routes get raw bodies (deep nesting in any field, huge numbers, wrong types, invalid UTF-8,
lone surrogates, empty, array and null bodies, huge strings), sent to a pass-through and a translated
route (tests/test_bad_input.py covers wrong types field by field, through the SDK-shaped bodies).
Read routes get hostile query strings and path segments.
"""

import json

import pytest
import requests

from tests.test_bad_input import ROUTES

DEPTH = 300  # past orjson's 254-level limit on re-encoding


def nested(depth: int, leaf=1):
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def base(path: str, model: str) -> dict:
    return {"model": "test/embed" if path == "/v1/embeddings" else model, **ROUTES[path]}


def corpus(path: str, model: str) -> list[tuple[str, bytes, str | None]]:
    """(case, raw body, the param the 400 must name or None)."""
    b = base(path, model)
    prompt_field = "input" if path in ("/v1/responses", "/v1/embeddings") else "messages"
    cases: list[tuple[str, bytes, str | None]] = [
        ("empty body", b"", None),
        ("array body", b"[]", None),
        ("array of bodies", json.dumps([b]).encode(), None),
        ("null body", b"null", None),
        ("a string body", b'"hello"', None),
        ("a number body", b"1e400", None),
        ("invalid utf-8", json.dumps(b).encode()[:-1] + b', "user": "\xff\xfe"}', None),
        ("invalid utf-8 in a key", json.dumps(b).encode()[:-1] + b', "\xc3\x28": 1}', None),
        ("lone surrogate", json.dumps(b).encode()[:-1] + b', "user": "\\ud800"}', None),
        ("lone low surrogate", json.dumps(b).encode()[:-1] + b', "user": "\\udc00x"}', None),
        ("truncated", json.dumps(b).encode()[:-3], None),
        ("deep body", json.dumps(nested(DEPTH)).encode(), None),
        ("deep unknown field", json.dumps({**b, "x_vendor": nested(DEPTH)}).encode(), "x_vendor"),
        ("deep metadata", json.dumps({**b, "metadata": nested(DEPTH)}).encode(), "metadata"),
        ("deep tools", json.dumps({**b, "tools": [nested(DEPTH)]}).encode(), "tools"),
        ("deep prompt", json.dumps({**b, prompt_field: [{"role": "user", "content": nested(DEPTH)}]}).encode(),
         prompt_field),
        ("huge max_tokens", json.dumps({**b, "max_tokens": 10**30}).encode(), None),
        ("infinite temperature", json.dumps(b).encode()[:-1] + b', "temperature": 1e999}', None),
        ("huge integer", json.dumps({**b, "seed": 10**40}).encode(), None),
        ("negative n", json.dumps({**b, "n": -5}).encode(), None),
        ("huge n", json.dumps({**b, "n": 1_000_000}).encode(), None),
        ("wrong-typed model", json.dumps({**b, "model": ["x"]}).encode(), "model"),
        ("wrong-typed prompt", json.dumps({**b, prompt_field: 12}).encode(), None),
        ("huge string", json.dumps({**b, "user": "x" * 2_000_000}).encode(), None),
        ("huge prompt", json.dumps({**b, prompt_field: [{"role": "user", "content": "word " * 500_000}]}).encode(),
         None),
        ("NaN literal", json.dumps(b).encode()[:-1] + b', "top_p": NaN}', None),
    ]
    return cases


def shaped(r: requests.Response, path: str) -> dict | None:
    """The error object when the body has the dialect's shape, else None."""
    try:
        body = r.json()
    except ValueError:
        return None
    if path.startswith("/v1/messages"):
        ok = isinstance(body, dict) and body.get("type") == "error" and isinstance(body.get("error"), dict) \
            and isinstance(body["error"].get("message"), str) and isinstance(body["error"].get("type"), str)
        return body["error"] if ok else None
    ok = isinstance(body, dict) and isinstance(body.get("error"), dict) \
        and isinstance(body["error"].get("message"), str) and "param" in body["error"]
    return body["error"] if ok else None


@pytest.mark.parametrize("model", ["test/fake-tool", "anthropic-test/claude-fake"])
def test_inference_routes_answer_the_corpus_in_their_dialect(gateway_factory, fake_anthropic, model):
    gw = gateway_factory()
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {gw.api_key}", "anthropic-version": "2023-06-01",
                            "Content-Type": "application/json"})
    failures = []
    for path in ROUTES:
        for case, raw, param in corpus(path, model):
            r = session.post(gw.url + path, data=raw, timeout=30)
            err = shaped(r, path) if r.status_code >= 400 else None
            if r.status_code >= 500 or r.status_code < 200:
                failures.append((path, case, r.status_code, r.text[:160]))
            elif r.status_code >= 400 and err is None:
                failures.append((path, case, "not the dialect's shape", r.text[:160]))
            elif param and r.status_code >= 400 and not path.startswith("/v1/messages") \
                    and not str(err.get("param") or "").startswith(param):
                failures.append((path, case, f"param {err.get('param')!r}, not {param!r}", r.text[:160]))
            elif param and path.startswith("/v1/messages") and r.status_code >= 400 and param not in err["message"]:
                failures.append((path, case, f"message does not name {param!r}", r.text[:160]))
    assert failures == [], f"{len(failures)} bad answers: {failures[:5]}"


def test_deep_nesting_is_a_400_naming_the_field_before_any_upstream_call(gateway, fake_openai):
    """The failure once seen: a pass-through body nested 254+ levels deep was a 500 from orjson's limit."""
    before = len(fake_openai.requests)
    r = gateway.post("/v1/chat/completions", {"model": "test/fake-gpt", "messages": [{"role": "user",
                     "content": "hi"}], "metadata": {"deep": nested(DEPTH)}})
    assert r.status_code == 400
    assert r.json()["error"]["param"].startswith("metadata.deep")
    assert len(fake_openai.requests) == before
    ok = gateway.post("/v1/chat/completions", {"model": "test/fake-gpt", "messages": [{"role": "user",
                      "content": "hi"}], "metadata": {"shallow": nested(40)}})
    assert ok.status_code == 200  # ordinary nesting is served


READ_ROUTES = ["/v1/models", "/v1/models/test/fake-gpt", "/v1/providers", "/v1/usage/summary",
               "/v1/responses/resp_missing", "/healthz", "/readyz"]
HOSTILE_VALUES = ["%ff%fe", "%ed%a0%80", "%00", "9" * 400, "-1e999", "[]", "%7B%7D", "x" * 5000]


def test_read_routes_answer_hostile_queries_and_paths_in_openai_shape(gateway):
    headers = {"Authorization": f"Bearer {gateway.api_key}"}
    failures = []
    urls = []
    for route in READ_ROUTES:
        urls += [f"{route}?{name}={value}" for value in HOSTILE_VALUES for name in ("bogus", "%ff", "limit")]
    urls += [f"/v1/usage/summary?{name}={value}" for value in HOSTILE_VALUES for name in ("start", "end", "model")]
    urls += [f"/v1/models/{value}" for value in HOSTILE_VALUES]
    urls += [f"/v1/responses/{value}" for value in HOSTILE_VALUES]
    for url in urls:
        for method in ("GET", "DELETE") if url.startswith("/v1/responses") else ("GET",):
            r = requests.request(method, gateway.url + url, headers=headers, timeout=10)
            if r.status_code >= 500 and not (url.startswith("/readyz") and r.status_code == 503):
                failures.append((method, url[:80], r.status_code, r.text[:120]))
            elif r.status_code >= 400 and (url.startswith("/v1/") or r.status_code == 400):
                err = shaped(r, url)
                if err is None:
                    failures.append((method, url[:80], "not the OpenAI shape", r.text[:120]))
    assert failures == [], f"{len(failures)} bad answers: {failures[:5]}"
